"""Settings from environment variables (pydantic-settings), read once per execution environment."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent_patterns.errors import ConfigurationError


def on_lambda() -> bool:
    """True inside a Lambda execution environment (the runtime always sets this variable)."""
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ


class Settings(BaseSettings):
    """Every setting the layer reads; the README's configuration table mirrors this class."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    stage: str = Field("local", description="Deployment stage name, used in logs and metrics.")
    redis_url: SecretStr | None = Field(None, description="Redis URL; unset locally: embedded Redis.")
    redis_url_secret_arn: str | None = Field(None, description="Secrets Manager ARN holding REDIS_URL.")
    database_url: SecretStr | None = Field(None, description="Postgres URL; unset locally: embedded Postgres.")
    database_url_secret_arn: str | None = Field(None, description="Secrets Manager ARN holding DATABASE_URL.")
    auth_mode: Literal["local", "apigateway"] | None = Field(
        None, description="Where tenant identity comes from; default apigateway on Lambda, local elsewhere."
    )
    auth_secret: SecretStr | None = Field(None, description="HMAC key for local bearer tokens and stream tokens.")
    auth_secret_arn: str | None = Field(None, description="Secrets Manager ARN holding AUTH_SECRET.")
    tenant_claim: str = Field("tenant_id", description="JWT claim naming the tenant (API Gateway authorizer).")
    jwt_issuer: str | None = Field(None, description="Identity provider whose JWTs the streaming function accepts.")
    jwt_audience: str | None = Field(None, description="Accepted JWT audience (comma-separated for several).")
    jwt_jwks_url: str | None = Field(None, description="JWKS URL; default <JWT_ISSUER>/.well-known/jwks.json.")
    stream_token_ttl_seconds: int = Field(3600, ge=60, le=86_400)
    sse_heartbeat_seconds: float = Field(15.0, gt=0)
    sse_retry_ms: int = Field(2000, ge=100, description="Reconnect delay suggested to SSE clients.")
    sse_max_stream_seconds: float = Field(840.0, gt=0, description="Streams end (cleanly) after this long.")
    redis_socket_timeout: float = Field(5.0, gt=0)
    redis_connect_timeout: float = Field(2.0, gt=0)
    redis_health_check_interval: int = Field(15, ge=0)
    redis_max_connections: int = Field(64, ge=4, description="Redis connections per execution environment.")
    database_connect_timeout: int = Field(5, ge=1)
    database_idle_check_seconds: float = Field(30.0, ge=0)
    run_events_maxlen: int = Field(10_000, ge=100)
    run_events_ttl_seconds: int = Field(7 * 86_400, ge=60)
    crawl_queue_url: str | None = Field(None, description="SQS queue of crawl jobs; unset locally: in-process.")
    crawl_allowed_private_hosts_unsafe: str = Field(
        "",
        alias="CRAWL_ALLOWED_PRIVATE_HOSTS_UNSAFE",
        description="Comma-separated host or host:port the crawler may reach although not public.",
    )
    crawl_concurrency: int = Field(6, ge=1, le=16, description="Pages crawled in parallel per run.")
    crawl_invocation_margin_seconds: float = Field(
        60.0, ge=5, description="Stop starting pages this long before the invocation's time runs out."
    )
    stream_base_url: str | None = Field(None, description="Public base URL of the streaming function.")
    llm_models: str = Field("", description='JSON: model aliases, e.g. {"fast": {"openai": "gpt-4o-mini"}}.')
    llm_agent_models: str = Field("", description='JSON: agent type -> model alias, e.g. {"summarizer": "fast"}.')
    llm_cache_ttl_seconds: int = Field(86_400, ge=1)
    llm_memory_cache_size: int = Field(1024, ge=0)
    llm_memory_cache_ttl_seconds: float = Field(300.0, ge=0)
    llm_daily_token_budget: int = Field(1_000_000, ge=0, description="Tokens per tenant per UTC day (HTTP API).")
    llm_budget_fail_open: bool = Field(False, description="Allow calls when the budget store is down.")
    llm_max_tokens_limit: int = Field(4096, ge=1)
    llm_max_prompt_chars: int = Field(100_000, ge=1)
    llm_total_timeout_seconds: float = Field(25.0, gt=0, description="All attempts on all providers.")
    llm_attempt_timeout_seconds: float = Field(20.0, gt=0)
    llm_max_attempts: int = Field(3, ge=1, le=10, description="Attempts per provider.")
    llm_breaker_threshold: int = Field(5, ge=1)
    llm_breaker_window_seconds: int = Field(60, ge=1)
    llm_breaker_cooldown_seconds: int = Field(30, ge=1)
    llm_singleflight_wait_seconds: float = Field(25.0, ge=0)
    embedding_dimensions: int = Field(1536, ge=1, le=2000, description="Vector size of tenant schemas.")
    embedding_model: str = Field("text-embedding-3-small", description="OpenAI embeddings model.")
    search_max_documents: int = Field(100, ge=1, description="Documents per POST /v1/documents (413 beyond).")
    search_max_document_chars: int = Field(200_000, ge=1, description="Characters per document (422 beyond).")
    search_chunk_tokens: int = Field(400, ge=16, description="Approximate tokens per chunk.")
    search_chunk_overlap: int = Field(50, ge=0, description="Approximate tokens shared by neighbouring chunks.")
    openai_api_key: SecretStr | None = None
    openai_api_key_secret_arn: str | None = None
    openai_base_url: str | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_api_key_secret_arn: str | None = None
    anthropic_base_url: str | None = None

    @property
    def crawl_allowed_private_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip() for h in self.crawl_allowed_private_hosts_unsafe.split(",") if h.strip())

    @property
    def effective_auth_mode(self) -> Literal["local", "apigateway"]:
        if self.auth_mode is not None:
            return self.auth_mode
        return "apigateway" if on_lambda() else "local"

    def url_for(self, backend: Literal["redis", "postgres"]) -> str:
        """The backend's URL from the environment or Secrets Manager."""
        if backend == "redis":
            value, arn, var = self.redis_url, self.redis_url_secret_arn, "REDIS_URL"
        else:
            value, arn, var = self.database_url, self.database_url_secret_arn, "DATABASE_URL"
        if value is not None:
            return value.get_secret_value()
        if arn:
            return resolve_secret(arn)
        raise ConfigurationError(
            f"{var} is not set: set {var} (or {var}_SECRET_ARN) to the {backend} server to use"
            " (locally, `uv run agent-patterns dev` starts an embedded one)"
        )


def resolve_secret(arn: str) -> str:
    """Read a secret through Powertools parameters (cached for 5 minutes); boto3 loads only here."""
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(arn, max_age=300)
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"secret {arn} is empty or not a string")
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests, and the dev server after it starts embedded backends)."""
    get_settings.cache_clear()
