"""call_llm: cache → budget → OpenAI (retries) → Anthropic → settle → cache."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent_patterns.backends.redis import is_redis_unavailable, tolerate_redis_outage
from agent_patterns.errors import BackendUnavailableError, BudgetExceededError, ValidationError
from agent_patterns.llm import budget, cache, providers
from agent_patterns.llm.pricing import cost_usd
from agent_patterns.llm.routing import Route, route_for
from agent_patterns.llm.settings import llm_settings
from agent_patterns.observability import logger, metrics
from agent_patterns.tenancy import validate_tenant_id

if TYPE_CHECKING:
    from redis.asyncio.lock import Lock


@dataclass(frozen=True)
class LLMResult:
    content: str
    tokens_used: int  # what this call spent: 0 for a cache hit
    cost_usd: float
    cached: bool
    provider: str
    model: str = ""


def _validate(prompt: str, max_tokens: int, temperature: float, system: str | None) -> None:
    settings = llm_settings()
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationError("prompt: must not be empty")
    if len(prompt) + len(system or "") > settings.llm_max_prompt_chars:
        raise ValidationError(f"prompt: longer than {settings.llm_max_prompt_chars} characters (LLM_MAX_PROMPT_CHARS)")
    if not 1 <= max_tokens <= settings.llm_max_tokens_limit:
        raise ValidationError(f"max_tokens: must be between 1 and {settings.llm_max_tokens_limit}")
    if not 0.0 <= temperature <= 2.0:
        raise ValidationError("temperature: must be between 0 and 2")


def _metric(name: str, value: float, unit: str = "Count") -> None:
    from aws_lambda_powertools.metrics import MetricUnit

    metrics.add_metric(name=name, unit=getattr(MetricUnit, unit), value=value)


async def call_llm(
    prompt: str,
    tenant_id: str,
    daily_budget: int,
    agent_type: str,
    *,
    model: str | None = None,
    max_tokens: int = 1024,
    temperature: float = 0.0,
    system: str | None = None,
) -> LLMResult:
    """One completion for `tenant_id`: cached per tenant, within the tenant's daily token budget."""
    started = time.perf_counter()
    validate_tenant_id(tenant_id)
    _validate(prompt, max_tokens, temperature, system)
    route = route_for(agent_type, model)
    key = cache.cache_key(
        tenant_id=tenant_id,
        agent_type=agent_type,
        model=route.alias,
        system=system,
        prompt=prompt,
        temperature=temperature,
        max_tokens=max_tokens,
    )

    found = await cache.get(key)
    held: Lock | bool = True
    if found is None:
        wait_s = llm_settings().llm_singleflight_wait_seconds
        held = await cache.lock(key, wait_s + 5)
        if held is False:  # someone is already asking exactly this: wait for their answer
            value = await cache.wait_for(key, wait_s)
            if value is not None:
                found = (value, "singleflight")
            else:  # they failed or took too long: ask ourselves, with the lock if it is free now
                held = await cache.lock(key, wait_s + 5) or True
    if found is not None:
        value, layer = found
        _metric("CacheHits", 1)
        logger.info(
            "llm call",
            extra={
                "provider": value["provider"],
                "model": value["model"],
                "tokens": 0,
                "cost_usd": 0.0,
                "cache_hit": layer,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        return LLMResult(value["content"], 0, 0.0, True, value["provider"], value["model"])
    try:
        return await _call_and_cache(
            key, route, tenant_id, daily_budget, providers.Request(prompt, system, max_tokens, temperature), started
        )
    finally:
        await cache.unlock(held)


async def _reserve(tenant_id: str, amount: int, daily_budget: int) -> budget.Reservation | None:
    try:
        outcome = await budget.reserve(tenant_id, amount, daily_budget)
    except Exception as exc:
        if not is_redis_unavailable(exc):
            raise
        if llm_settings().llm_budget_fail_open:
            logger.warning("budget store unavailable; failing open (LLM_BUDGET_FAIL_OPEN)")
            return None
        raise BackendUnavailableError(
            "the token budget store (Redis) is unavailable; calls are refused until "
            "it returns (set LLM_BUDGET_FAIL_OPEN=true to allow them)"
        ) from exc
    if isinstance(outcome, budget.Usage):
        retry = budget.seconds_until_next_utc_day()
        raise BudgetExceededError(
            f"daily token budget of {daily_budget} exhausted for tenant {tenant_id}: {outcome.used} used, "
            f"{outcome.reserved} reserved by calls in flight, this call needs up to {amount}",
            headers={"Retry-After": str(retry)},
        )
    return outcome


async def _call_and_cache(
    key: str, route: Route, tenant_id: str, daily_budget: int, req: providers.Request, started: float
) -> LLMResult:
    providers.chain_for(route)  # no provider configured: 503 naming the variables, before any budget
    amount = budget.estimate_tokens(req.system, req.prompt, max_tokens=req.max_tokens)
    reservation = await _reserve(tenant_id, amount, daily_budget)
    try:
        completion, fell_back = await providers.complete(route, req)
    except BaseException:
        if reservation is not None:
            with tolerate_redis_outage("budget release"):
                await budget.release(reservation)
        raise
    if reservation is not None:
        with tolerate_redis_outage("budget settlement"):
            await budget.settle(reservation, completion.tokens_used)
    cost = cost_usd(
        completion.model,
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cached_input_tokens=completion.cached_input_tokens,
        cache_write_tokens=completion.cache_write_tokens,
    )
    await cache.put(key, {"content": completion.content, "provider": completion.provider, "model": completion.model})
    _metric("Tokens", completion.tokens_used)
    _metric("CostUSD", cost, "NoUnit")
    if fell_back:
        _metric("Fallbacks", 1)
    logger.info(
        "llm call",
        extra={
            "provider": completion.provider,
            "model": completion.model,
            "tokens": completion.tokens_used,
            "cost_usd": cost,
            "cache_hit": None,
            "fallback": fell_back,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    return LLMResult(completion.content, completion.tokens_used, cost, False, completion.provider, completion.model)
