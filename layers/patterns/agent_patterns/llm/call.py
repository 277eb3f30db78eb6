"""call_llm: cache → limits → reserve → OpenAI (retries) → Anthropic → ledger → settle → cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_patterns.backends.redis import is_redis_unavailable, tolerate_redis_outage
from agent_patterns.errors import BackendUnavailableError, BudgetExceededError, RateLimitedError, ValidationError
from agent_patterns.llm import budget, cache, providers
from agent_patterns.llm.chat import ChatAnswer, ChatRequest
from agent_patterns.llm.pricing import cost_nanousd, worst_case_nanousd
from agent_patterns.llm.routing import Route, route_for
from agent_patterns.llm.settings import llm_settings
from agent_patterns.observability import logger, metrics
from agent_patterns.tenancy import validate_tenant_id

if TYPE_CHECKING:
    from agent_patterns.llm.ledger import Entry


@dataclass(frozen=True)
class LLMResult:
    content: str
    tokens_used: int  # what this call spent: 0 for a cache hit
    cost_usd: float
    cached: bool
    provider: str
    model: str = ""
    rate: budget.RateState | None = None  # the tenant's per-minute limits after this call


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

    value, held = await cached(key, tenant_id, started)
    if value is not None:
        return LLMResult(value["content"], 0, 0.0, True, value["provider"], value["model"])
    try:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        req = ChatRequest.model_validate(
            {"model": route.alias, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        )
        input_bytes = sum(len(t.encode()) for t in (system, prompt) if t)

        async def store(a: ChatAnswer) -> None:
            await cache.put(key, {"content": a.content or "", "provider": a.provider, "model": a.model}, held)

        done, spent = await answer_metered(tenant_id, route, req, max_tokens, input_bytes, daily_budget, started, store)
        a = done.answer
        return LLMResult(a.content or "", done.tokens, spent.cost_usd, False, a.provider, a.model, spent.rate)
    finally:
        await cache.unlock(held)


async def cached(key: str, tenant_id: str, started: float) -> tuple[dict[str, Any] | None, cache.Held | bool]:
    """A cached answer (counted as a hit), or the single-flight lock to hold while asking."""
    found, held = await _lookup(key)
    if found is None:
        return None, held
    value, layer = found
    await _hit(tenant_id, value, layer, started)
    return value, held


async def _lookup(key: str) -> tuple[tuple[dict[str, Any], str] | None, cache.Held | bool]:
    """A cached answer (and the layer it came from), or the single-flight lock to hold while
    asking the provider: identical concurrent misses wait for the first one's answer."""
    wait_s = llm_settings().llm_singleflight_wait_seconds
    found, held = await cache.lookup(key, wait_s + 5)
    if found is None and held is False:  # someone is already asking exactly this: wait for their answer
        value = await cache.wait_for(key, wait_s)
        if value is not None:
            return (value, "singleflight"), True
        found, held = await cache.lookup(key, wait_s + 5)  # they failed or took too long: ask ourselves
        held = held or True
    return found, held


async def _hit(tenant_id: str, value: dict[str, Any], layer: str, started: float) -> None:
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
    await _record_hit(tenant_id, value, started)


async def _record_hit(tenant_id: str, value: dict[str, Any], started: float) -> None:
    """Cache hits are in the ledger too (usage reports count them), in batches: they cost nothing."""
    from agent_patterns.llm import ledger

    day = time.strftime("%Y-%m-%d", time.gmtime())
    await ledger.record_hit(tenant_id, day, value["provider"], value["model"])


def _refused(tenant_id: str, refusal: budget.Refusal, amount: int, nanousd: int) -> Exception:
    headers = {"Retry-After": str(refusal.retry_after)}
    if refusal.kind == "rate":
        unit = "requests" if refusal.what == "requests" else "tokens"
        headers[f"x-ratelimit-limit-{unit}"] = str(refusal.limit)
        headers[f"x-ratelimit-remaining-{unit}"] = str(max(0, refusal.limit - refusal.used))
        headers[f"x-ratelimit-reset-{unit}"] = f"{refusal.retry_after}s"
        need = "1 more request" if unit == "requests" else f"up to {amount} more tokens"
        return RateLimitedError(
            f"rate limit of {refusal.limit} {unit} per minute reached for tenant {tenant_id}: "
            f"{refusal.used} used this minute, this call needs {need}",
            headers=headers,
        )
    window, measure = refusal.what.split("_")
    period = "daily" if window == "day" else "monthly"
    if measure == "tokens":
        limit, used, held, need = (str(v) for v in (refusal.limit, refusal.used, refusal.reserved, amount))
        what = f"{period} token budget of {limit}"
    else:
        limit, used, held, need = (f"${v / 1e9:.6f}" for v in (refusal.limit, refusal.used, refusal.reserved, nanousd))
        what = f"{period} USD budget of {limit}"
    return BudgetExceededError(
        f"{what} exhausted for tenant {tenant_id}: {used} used, {held} reserved by calls in flight, "
        f"this call needs up to {need}",
        headers=headers,
    )


async def _reserve(tenant_id: str, amount: int, nanousd: int, limits: budget.Limits) -> budget.Reservation | None:
    settings = llm_settings()
    lease = settings.llm_total_timeout_seconds + settings.llm_reservation_margin_seconds
    try:
        outcome = await budget.reserve(tenant_id, amount, nanousd, limits, lease_seconds=lease)
    except Exception as exc:
        if not is_redis_unavailable(exc):
            raise
        if settings.llm_budget_fail_open:
            logger.warning("budget store unavailable; failing open (LLM_BUDGET_FAIL_OPEN)")
            return None
        raise BackendUnavailableError(
            "the token budget store (Redis) is unavailable; calls are refused until "
            "it returns (set LLM_BUDGET_FAIL_OPEN=true to allow them)"
        ) from exc
    if isinstance(outcome, budget.Refusal):
        raise _refused(tenant_id, outcome, amount, nanousd)
    return outcome


async def _settle(tenant_id: str, reservation: budget.Reservation | None, entry: Entry) -> None:
    """Ledger first (durable), then the counters. A row Postgres cannot take rides in the Redis
    settlement to an outbox; a settlement Redis cannot take is applied from the ledger when the
    reservation's lease runs out. Only with both stores down is the row lost (and logged)."""
    from agent_patterns.llm import ledger

    outbox = ""
    try:
        await ledger.record(entry)
    except Exception:
        logger.warning("usage ledger unavailable; the row waits in the Redis outbox", exc_info=True)
        outbox = entry.json()
    if reservation is None:  # failing open: no counters to settle
        if outbox:
            logger.error("usage could not be recorded anywhere", extra={"row": outbox})
        return
    try:
        pending = await budget.settle(
            tenant_id, reservation.id, reservation.day, entry.tokens, entry.cost_nanousd, outbox
        )
    except Exception as exc:
        if not is_redis_unavailable(exc):
            raise
        if outbox:
            logger.error("usage could not be recorded anywhere", extra={"row": outbox})
        else:
            logger.warning("budget settlement deferred: Redis unavailable; applied from the ledger after the lease")
        return
    if pending and not outbox:
        try:
            await ledger.flush_outbox()
        except Exception:
            logger.warning("ledger outbox not flushed", exc_info=True)


@dataclass(frozen=True)
class Metered[T]:
    """What a provider call returned, with what the ledger needs to know about it."""

    answer: T
    provider: str
    model: str
    usage: dict[str, int]  # input_tokens (uncached), output_tokens, cached_input_tokens, cache_write_tokens
    fell_back: bool

    @property
    def tokens(self) -> int:
        return sum(self.usage.values())


@dataclass(frozen=True)
class Spent:
    cost_usd: float
    rate: budget.RateState | None


async def open_reservation(
    tenant_id: str, models: list[str], input_bytes: int, max_tokens: int, daily_budget: int | None
) -> budget.Reservation | None:
    """Reserve a call's upper bound: tokens (input bytes + overhead + max_tokens) and USD at the
    dearest of `models` the call may reach. None when failing open without Redis."""
    from agent_patterns.llm.limits import limits_for

    amount = input_bytes + budget.MESSAGE_OVERHEAD_TOKENS + max_tokens
    nanousd = worst_case_nanousd(models, input_tokens=amount - max_tokens, max_output_tokens=max_tokens)
    limits = await limits_for(tenant_id, daily_budget)
    if 0 < limits.tokens_per_minute < amount:
        raise ValidationError(
            f"this call needs up to {amount} tokens, more than the tenant's {limits.tokens_per_minute} tokens "
            "per minute: shorten the prompt or lower max_tokens"
        )
    return await _reserve(tenant_id, amount, nanousd, limits)


async def release_reservation(reservation: budget.Reservation | None) -> None:
    if reservation is not None:
        with tolerate_redis_outage("budget release"):
            await budget.release(reservation)


async def close_reservation(
    tenant_id: str,
    reservation: budget.Reservation | None,
    provider: str,
    model: str,
    usage: dict[str, int],
    started: float,
    fell_back: bool,
) -> Spent:
    """Ledger and settle what the provider reported for a call that reached it."""
    nano = cost_nanousd(model, **usage)
    cost = nano / 1e9
    tokens = sum(usage.values())
    from agent_patterns.llm.ledger import Entry

    day = reservation.day.isoformat() if reservation else time.strftime("%Y-%m-%d", time.gmtime())
    entry = Entry(
        reservation_id=reservation.id if reservation else _new_id(),
        tenant_id=tenant_id,
        day=day,
        provider=provider,
        model=model,
        tokens=tokens,
        cost_nanousd=nano,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
        input_tokens=usage["input_tokens"],
        output_tokens=usage["output_tokens"],
        cached_input_tokens=usage["cached_input_tokens"],
        cache_write_tokens=usage["cache_write_tokens"],
    )
    await _settle(tenant_id, reservation, entry)
    _metric("Tokens", tokens)
    _metric("CostUSD", cost, "NoUnit")
    if fell_back:
        _metric("Fallbacks", 1)
    logger.info(
        "llm call",
        extra={
            "provider": provider,
            "model": model,
            "tokens": tokens,
            "cost_usd": cost,
            "cache_hit": None,
            "fallback": fell_back,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    return Spent(cost, reservation.rate if reservation else None)


async def metered[T](
    tenant_id: str,
    models: list[str],
    input_bytes: int,
    max_tokens: int,
    daily_budget: int | None,
    started: float,
    run: Callable[[], Awaitable[Metered[T]]],
    alongside: Callable[[Metered[T]], Awaitable[None]] | None = None,
) -> tuple[Metered[T], Spent]:
    """Run one provider call inside the tenant's limits: reserve, call, ledger and settle.
    `alongside` (the cache write) runs while the answer is ledgered and settled: it needs
    neither, and waiters on the single-flight lock get the answer sooner."""
    reservation = await open_reservation(tenant_id, models, input_bytes, max_tokens, daily_budget)
    try:
        done = await run()
    except BaseException:
        await release_reservation(reservation)
        raise
    # A task, shielded: a caller cancelled from here on still ledgers and settles what it spent.
    closing = asyncio.ensure_future(
        close_reservation(tenant_id, reservation, done.provider, done.model, done.usage, started, done.fell_back)
    )
    if alongside is not None:
        try:
            await alongside(done)
        except Exception:  # the call is paid for and answered: a failed cache write is not its error
            logger.warning("llm cache write failed", exc_info=True)
    return done, await asyncio.shield(closing)


async def answer_metered(
    tenant_id: str,
    route: Route,
    req: ChatRequest,
    max_tokens: int,
    input_bytes: int,
    daily_budget: int | None,
    started: float,
    store: Callable[[ChatAnswer], Awaitable[None]] | None = None,
    models: list[str] | None = None,
) -> tuple[Metered[ChatAnswer], Spent]:
    """A chat answer from the providers within the tenant's limits: reserve, call, ledger and
    settle; `store` (the cache write) runs while it is ledgered. `models`: the route's chain, when
    the caller resolved it already."""
    if models is None:  # none configured: 503 before any budget
        models = [model for _, model in providers.chain_for(route)]

    async def run() -> Metered[ChatAnswer]:
        answer, fell_back = await providers.complete_chat(route, req, max_tokens)
        return Metered(answer, answer.provider, answer.model, answer.usage.as_dict(), fell_back)

    async def alongside(done: Metered[ChatAnswer]) -> None:
        if store is not None:
            await store(done.answer)

    return await metered(tenant_id, models, input_bytes, max_tokens, daily_budget, started, run, alongside)


def _new_id() -> str:
    import uuid

    return str(uuid.uuid4())
