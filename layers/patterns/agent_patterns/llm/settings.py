"""Settings of the llm function (and of the OpenAI client search uses for embeddings)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from agent_patterns.config import FunctionSettings, settings_of


class LlmSettings(FunctionSettings):
    """Providers, models, cache, budgets and retries of the LLM gateway."""

    openai_api_key: SecretStr | None = Field(None, description="OpenAI API key.")
    openai_api_key_secret_arn: str | None = Field(None, description="Secrets Manager ARN holding the OpenAI key.")
    openai_base_url: str | None = Field(None, description="OpenAI-compatible base URL (default: OpenAI's).")
    anthropic_api_key: SecretStr | None = Field(None, description="Anthropic API key.")
    anthropic_api_key_secret_arn: str | None = Field(None, description="Secrets Manager ARN holding the Anthropic key.")
    anthropic_base_url: str | None = Field(None, description="Anthropic base URL (default: Anthropic's).")
    llm_models: str = Field("", description='JSON: model aliases, e.g. `{"fast": {"openai": "gpt-4o-mini"}}`.')
    llm_agent_models: str = Field("", description='JSON: agent type -> model alias, e.g. `{"summarizer": "fast"}`.')
    llm_cache_ttl_seconds: int = Field(86_400, ge=1, description="How long a cached answer is kept in Redis.")
    llm_memory_cache_size: int = Field(1024, ge=0, description="Answers kept in memory per execution environment.")
    llm_memory_cache_ttl_seconds: float = Field(300.0, ge=0, description="How long an in-memory answer is used.")
    llm_daily_token_budget: int = Field(1_000_000, ge=0, description="Tokens per tenant per UTC day (HTTP API).")
    llm_daily_usd_budget: float = Field(0.0, ge=0, description="USD per tenant per UTC day (0: no USD limit).")
    llm_monthly_token_budget: int = Field(0, ge=0, description="Tokens per tenant per UTC month (0: no limit).")
    llm_monthly_usd_budget: float = Field(0.0, ge=0, description="USD per tenant per UTC month (0: no limit).")
    llm_requests_per_minute: int = Field(0, ge=0, description="Provider calls per tenant per minute (0: no limit).")
    llm_tokens_per_minute: int = Field(0, ge=0, description="Tokens per tenant per minute (0: no limit).")
    llm_limits_cache_seconds: float = Field(
        30.0, ge=0, description="How long a tenant's limit overrides are cached per environment."
    )
    llm_reservation_margin_seconds: float = Field(
        30.0, ge=0, description="A reservation's lease beyond the call's deadline; then it is reaped."
    )
    llm_budget_fail_open: bool = Field(False, description="Allow calls when the budget store is down.")
    llm_auto_prompt_cache: bool = Field(
        False, description="Add Anthropic cache breakpoints to long system prompts and tool lists."
    )
    llm_auto_prompt_cache_min_chars: int = Field(
        4096, ge=1, description="How long a system prompt or tool list must be for an automatic breakpoint."
    )
    answer_min_similarity: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Vector similarity (0..1) a source needs for /v1/answer (a full-text match also counts).",
    )
    llm_default_max_tokens: int = Field(
        1024, ge=1, description="Answer limit of a chat request that sets no max_tokens (a reservation needs one)."
    )
    llm_max_tokens_limit: int = Field(4096, ge=1, description="Largest `max_tokens` a request may ask for.")
    llm_max_prompt_chars: int = Field(100_000, ge=1, description="Longest prompt accepted, in characters.")
    llm_total_timeout_seconds: float = Field(25.0, gt=0, description="All attempts on all providers.")
    llm_attempt_timeout_seconds: float = Field(20.0, gt=0, description="One attempt on one provider.")
    llm_max_attempts: int = Field(3, ge=1, le=10, description="Attempts per provider.")
    llm_breaker_threshold: int = Field(5, ge=1, description="Failures in the window that open a provider's breaker.")
    llm_breaker_window_seconds: int = Field(60, ge=1, description="Window in which breaker failures are counted.")
    llm_breaker_cooldown_seconds: int = Field(30, ge=1, description="How long an open breaker skips the provider.")
    llm_singleflight_wait_seconds: float = Field(
        25.0, ge=0, description="How long identical concurrent calls wait for the first one's answer."
    )


def llm_settings() -> LlmSettings:
    return settings_of(LlmSettings)
