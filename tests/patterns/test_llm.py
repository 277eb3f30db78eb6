"""call_llm against the real embedded Redis and stub providers reached over HTTP by the real SDKs."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import subprocess
import uuid

import pytest

from agent_patterns.backends import get_redis, reset_redis
from agent_patterns.config import reset_settings
from agent_patterns.errors import (
    BackendUnavailableError,
    BudgetExceededError,
    ConfigurationError,
    ProviderRequestError,
    ProvidersUnavailableError,
    ValidationError,
)
from agent_patterns.llm import budget, cache, call_llm
from agent_patterns.llm.pricing import cost_usd
from agent_patterns.llm.providers import reset_clients
from tests.conftest import PYTHON, ROOT, LiveServer, python_subprocess_env
from tests.llm_stub import ResettingServer, StubProviders

BIG = 10_000_000


def tenant() -> str:
    return "t" + uuid.uuid4().hex[:12]


def prompt() -> str:
    return f"Summarise ticket {uuid.uuid4().hex}"


def seconds_to_next_utc_midnight(now: dt.datetime) -> float:
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return (midnight - now).total_seconds()


def assert_retry_after_is_next_utc_day(value: str, before: dt.datetime, after: dt.datetime) -> None:
    """`value` is the whole seconds (rounded up) from some instant between `before` and `after`
    to the next UTC midnight: not a constant, not an hour, not a day from now."""
    low, high = seconds_to_next_utc_midnight(after), seconds_to_next_utc_midnight(before)
    if before.date() != after.date():  # midnight passed during the call: either day's answer is right
        low, high = 0.0, 86_400.0
    assert value.isdigit(), value
    assert math.floor(low) <= int(value) <= math.ceil(high) + 1, (value, low, high)


@pytest.mark.parametrize(
    ("now", "seconds"),
    [
        ("2026-03-01T00:00:00", 86_401),
        ("2026-03-01T12:00:00", 43_201),
        ("2026-03-01T23:59:30", 31),
        ("2026-03-01T23:59:59.900", 1),
        ("2026-12-31T23:00:00", 3_601),  # across a year end
    ],
)
def test_a_refused_budget_retries_at_the_next_utc_midnight(now: str, seconds: int) -> None:
    at = dt.datetime.fromisoformat(now).replace(tzinfo=dt.UTC)
    assert budget.seconds_until_next_utc_day(at) == seconds


BASE = {
    "tenant_id": "acme",
    "agent_type": "default",
    "model": "default",
    "system": None,
    "prompt": "p",
    "temperature": 0.0,
    "max_tokens": 10,
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant_id", "globex"),
        ("agent_type", "critic"),
        ("model", "fast"),
        ("system", "be terse"),
        ("prompt", "p2"),
        ("temperature", 0.5),
        ("max_tokens", 11),
    ],
)
def test_every_parameter_and_the_tenant_change_the_cache_key(field: str, value: object) -> None:
    assert cache.cache_key(**BASE) == cache.cache_key(**dict(BASE))  # type: ignore[arg-type]
    assert cache.cache_key(**{**BASE, field: value}) != cache.cache_key(**BASE)  # type: ignore[arg-type]


async def test_a_miss_calls_the_provider_and_a_hit_costs_nothing(stub: StubProviders) -> None:
    t, p = tenant(), prompt()
    first = await call_llm(p, t, BIG, "default", max_tokens=50)
    assert not first.cached and first.provider == "openai" and first.model == "gpt-4o"
    prompt_tokens, completion_tokens = StubProviders.usage_for(p, 50)
    assert first.tokens_used == prompt_tokens + completion_tokens
    assert first.cost_usd == cost_usd("gpt-4o", input_tokens=prompt_tokens, output_tokens=completion_tokens)
    memory_hit = await call_llm(p, t, BIG, "default", max_tokens=50)
    cache.memory.clear()
    redis_hit = await call_llm(p, t, BIG, "default", max_tokens=50)
    for hit in (memory_hit, redis_hit):
        assert hit.cached and hit.tokens_used == 0 and hit.cost_usd == 0.0 and hit.content == first.content
    assert stub.calls["openai"] == 1
    assert (await budget.usage(t)).used == first.tokens_used  # hits spent nothing


async def test_tenants_never_share_cache_entries(stub: StubProviders) -> None:
    p = prompt()
    await call_llm(p, tenant(), BIG, "default")
    other = await call_llm(p, tenant(), BIG, "default")
    assert not other.cached and stub.calls["openai"] == 2


async def test_entries_expire_after_the_ttl_in_memory_too(
    stub: StubProviders, settings_env: pytest.MonkeyPatch
) -> None:
    settings_env.setenv("LLM_CACHE_TTL_SECONDS", "1")
    reset_settings()
    t, p = tenant(), prompt()
    await call_llm(p, t, BIG, "default")
    assert (await call_llm(p, t, BIG, "default")).cached
    await asyncio.sleep(1.2)
    assert not (await call_llm(p, t, BIG, "default")).cached
    assert stub.calls["openai"] == 2


async def test_cached_input_tokens_are_priced_as_cached(stub: StubProviders) -> None:
    stub.script["openai"].append({"ok": {"prompt_tokens": 1000, "completion_tokens": 100, "cached_tokens": 200}})
    result = await call_llm(prompt(), tenant(), BIG, "default", max_tokens=100)
    assert result.tokens_used == 1100
    assert result.cost_usd == pytest.approx((800 * 2.50 + 200 * 1.25 + 100 * 10.00) / 1_000_000, abs=1e-12)


async def test_the_budget_settles_to_real_usage_and_refuses_what_would_exceed_it(stub: StubProviders) -> None:
    t = tenant()
    result = await call_llm(prompt(), t, 5_000, "default", max_tokens=100)
    usage = await budget.usage(t)
    assert (usage.used, usage.reserved, usage.reserved_nanousd) == (result.tokens_used, 0, 0)
    before = dt.datetime.now(dt.UTC)
    with pytest.raises(BudgetExceededError) as info:
        await call_llm(prompt(), t, usage.used + 50, "default", max_tokens=100)
    after = dt.datetime.now(dt.UTC)
    assert info.value.status_code == 429 and info.value.code == "budget_exceeded"
    assert_retry_after_is_next_utc_day(info.value.headers["Retry-After"], before, after)
    assert stub.calls["openai"] == 1
    assert await budget.usage(t) == usage


async def test_a_failed_cache_write_does_not_fail_a_paid_call(
    stub: StubProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache write runs beside the ledger and settlement: its failure is logged, and the answer
    the tenant paid for is returned and counted."""

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cache write failed")

    monkeypatch.setattr(cache, "put", broken)
    t = tenant()
    result = await call_llm(prompt(), t, 5_000, "default", max_tokens=100)
    assert result.tokens_used > 0 and not result.cached
    usage = await budget.usage(t)
    assert (usage.used, usage.reserved) == (result.tokens_used, 0)


async def test_a_call_cancelled_after_the_answer_still_settles(stub: StubProviders) -> None:
    """Cancelled between the provider's answer and its settlement (a caller's timeout), the call
    is still ledgered and settled: the provider was paid."""
    t = tenant()
    answered = asyncio.Event()
    slow_put = asyncio.Event()
    real_put = cache.put

    async def put(*args: object, **kwargs: object) -> None:
        answered.set()
        await slow_put.wait()
        await real_put(*args, **kwargs)  # type: ignore[arg-type]

    import unittest.mock

    with unittest.mock.patch.object(cache, "put", put):
        task = asyncio.create_task(call_llm(prompt(), t, 5_000, "default", max_tokens=100))
        await asyncio.wait_for(answered.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    for _ in range(100):  # the settlement finishes on its own
        usage = await budget.usage(t)
        if usage.used:
            break
        await asyncio.sleep(0.05)
    assert usage.used > 0 and usage.reserved == 0


async def test_concurrent_calls_with_random_failures_never_overspend(
    stub: StubProviders, settings_env: pytest.MonkeyPatch
) -> None:
    settings_env.setenv("LLM_MAX_ATTEMPTS", "1")
    settings_env.setenv("LLM_BREAKER_THRESHOLD", "100000")
    reset_settings()
    stub.default["openai"] = {"random_failure": 0.3}
    stub.default["anthropic"] = {"random_failure": 0.3}
    t, daily = tenant(), 6_000
    results = await asyncio.gather(
        *(call_llm(prompt(), t, daily, "default", max_tokens=30) for _ in range(220)), return_exceptions=True
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    failed = [r for r in results if isinstance(r, ProvidersUnavailableError)]
    others = [r for r in results if isinstance(r, BaseException) and r not in refused and r not in failed]
    assert not others, repr(others[:3])
    assert len(ok) + len(refused) + len(failed) == 220
    assert ok and refused and failed
    usage = await budget.usage(t)
    assert usage.reserved == 0
    assert usage.used == sum(r.tokens_used for r in ok) <= daily


@pytest.mark.parametrize(
    "failure",
    [{"status": 429}, {"status": 500}, {"status": 503}, {"delay": 3.0}],
    ids=["429", "500", "503", "timeout"],
)
async def test_retryable_failures_fall_back_to_anthropic(
    stub: StubProviders, settings_env: pytest.MonkeyPatch, failure: dict[str, object]
) -> None:
    settings_env.setenv("LLM_MAX_ATTEMPTS", "2")
    reset_settings()
    stub.default["openai"] = failure
    result = await call_llm(prompt(), tenant(), BIG, "default")
    assert result.provider == "anthropic" and result.model == "claude-sonnet-5-5"
    assert stub.calls["openai"] == 2 and stub.calls["anthropic"] == 1  # retried, then fell back


async def test_a_connection_reset_falls_back(stub: StubProviders, settings_env: pytest.MonkeyPatch) -> None:
    resetting = ResettingServer()
    settings_env.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{resetting.port}/v1")
    settings_env.setenv("LLM_MAX_ATTEMPTS", "2")
    reset_settings()
    reset_clients()
    try:
        result = await call_llm(prompt(), tenant(), BIG, "default")
    finally:
        resetting.close()
    assert result.provider == "anthropic" and resetting.accepted == 2


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after-ms": "900"}, 0.9),
        ({"retry-after": "1"}, 1.0),
        ({"retry-after": "2", "retry-after-ms": "500"}, 0.5),
    ],
    ids=["retry-after-ms", "retry-after", "ms-wins"],
)
async def test_retry_after_is_honoured_and_the_primary_answers(
    stub: StubProviders, headers: dict[str, str], wait: float
) -> None:
    """The wait asked for is well above the backoff used without it (at most ~0.31 s before the
    second attempt), so only honouring the header makes the gap this long."""
    stub.script["openai"].append({"status": 429, "headers": headers})
    result = await call_llm(prompt(), tenant(), BIG, "default")
    assert result.provider == "openai" and stub.calls["openai"] == 2 and stub.calls["anthropic"] == 0
    first, second = stub.arrivals["openai"]
    assert wait <= second - first < wait + 1.0


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, ProviderRequestError), (404, ProviderRequestError), (401, ConfigurationError), (403, ConfigurationError)],
)
async def test_client_errors_fail_fast_without_fallback(
    stub: StubProviders, status: int, error: type[Exception]
) -> None:
    t = tenant()
    stub.default["openai"] = {"status": status}
    with pytest.raises(error):
        await call_llm(prompt(), t, BIG, "default")
    assert stub.calls["openai"] == 1 and stub.calls["anthropic"] == 0
    assert await budget.usage(t) == budget.Usage(0, 0, 0, 0)  # the reservation was released


async def test_both_providers_failing_is_503_and_consumes_no_budget(stub: StubProviders) -> None:
    t = tenant()
    stub.default["openai"] = {"status": 500}
    stub.default["anthropic"] = {"status": 529}
    with pytest.raises(ProvidersUnavailableError) as info:
        await call_llm(prompt(), t, BIG, "default")
    assert info.value.status_code == 503 and "openai" in info.value.message and "anthropic" in info.value.message
    assert await budget.usage(t) == budget.Usage(0, 0, 0, 0)


async def test_the_breaker_opens_skips_the_primary_then_closes(
    stub: StubProviders, settings_env: pytest.MonkeyPatch
) -> None:
    settings_env.setenv("LLM_BREAKER_THRESHOLD", "2")
    settings_env.setenv("LLM_BREAKER_COOLDOWN_SECONDS", "1")
    settings_env.setenv("LLM_MAX_ATTEMPTS", "1")
    reset_settings()
    stub.default["openai"] = {"status": 500}
    for _ in range(2):
        assert (await call_llm(prompt(), tenant(), BIG, "default")).provider == "anthropic"
    assert stub.calls["openai"] == 2
    assert (await call_llm(prompt(), tenant(), BIG, "default")).provider == "anthropic"
    assert stub.calls["openai"] == 2  # open: callers go straight to the fallback
    stub.default["openai"] = {}
    await asyncio.sleep(1.1)
    assert (await call_llm(prompt(), tenant(), BIG, "default")).provider == "openai"  # half-open probe succeeds
    assert not await get_redis().exists("llm:breaker:openai:open")


async def test_concurrent_identical_misses_make_one_provider_call(stub: StubProviders) -> None:
    stub.default["openai"] = {"delay": 0.3}
    t, p = tenant(), prompt()
    results = await asyncio.gather(*(call_llm(p, t, BIG, "default") for _ in range(20)))
    assert stub.calls["openai"] == 1
    assert len({r.content for r in results}) == 1
    assert sum(not r.cached for r in results) == 1
    assert (await budget.usage(t)).used == next(r.tokens_used for r in results if not r.cached)


async def test_with_redis_gone_the_budget_fails_closed_by_default(
    stub: StubProviders, settings_env: pytest.MonkeyPatch
) -> None:
    t, p = tenant(), prompt()
    await call_llm(p, t, BIG, "default")
    settings_env.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # Redis stops answering mid-test
    settings_env.setenv("REDIS_CONNECT_TIMEOUT", "0.2")
    reset_settings()
    reset_redis()
    cache.memory.clear()
    try:
        with pytest.raises(BackendUnavailableError, match="LLM_BUDGET_FAIL_OPEN"):
            await call_llm(prompt(), t, BIG, "default")
        settings_env.setenv("LLM_BUDGET_FAIL_OPEN", "true")
        reset_settings()
        result = await call_llm(p, t, BIG, "default")  # no cache, no budget, still an answer
        assert not result.cached and result.provider == "openai"
    finally:
        reset_redis()


async def test_no_provider_configured_is_503_naming_the_variable(settings_env: pytest.MonkeyPatch) -> None:
    settings_env.delenv("OPENAI_API_KEY", raising=False)
    settings_env.delenv("ANTHROPIC_API_KEY", raising=False)
    reset_settings()
    cache.memory.clear()
    with pytest.raises(ProvidersUnavailableError, match="OPENAI_API_KEY"):
        await call_llm(prompt(), tenant(), BIG, "default")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "  "}, "prompt"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 10**6}, "max_tokens"),
        ({"temperature": 3.0}, "temperature"),
        ({"model": "gpt-9"}, "unknown model"),
    ],
)
async def test_invalid_input(stub: StubProviders, kwargs: dict[str, object], message: str) -> None:
    args = {"prompt": "hi", "max_tokens": 10, **kwargs}
    with pytest.raises(ValidationError, match=message):
        await call_llm(args.pop("prompt"), tenant(), BIG, "default", **args)  # type: ignore[arg-type]
    assert stub.calls.total() == 0


def test_an_unpriced_model_is_a_configuration_error(settings_env: pytest.MonkeyPatch) -> None:
    from agent_patterns.llm.routing import route_for

    settings_env.setenv("LLM_MODELS", json.dumps({"default": {"openai": "gpt-unknown"}}))
    reset_settings()
    with pytest.raises(ConfigurationError, match="no price for model 'gpt-unknown'"):
        route_for("default", None)


def test_models_per_agent_type_are_configurable(settings_env: pytest.MonkeyPatch) -> None:
    from agent_patterns.llm.routing import route_for

    settings_env.setenv("LLM_AGENT_MODELS", json.dumps({"summarizer": "fast"}))
    reset_settings()
    assert route_for("summarizer", None).openai == "gpt-4o-mini"
    assert route_for("planner", None).openai == "gpt-4o"


def test_cache_hits_and_budget_refusals_import_no_sdk(stub_server: tuple[StubProviders, LiveServer]) -> None:
    _, live = stub_server
    script = """
import asyncio, json, sys
from agent_patterns.llm import call_llm, BudgetExceededError
async def main():
    first = await call_llm("lazy imports", "lazyt", 10**7, "default")
    out = {"after_miss": ["openai" in sys.modules, "anthropic" in sys.modules]}
    for name in [m for m in sys.modules if m.startswith(("openai", "anthropic"))]:
        del sys.modules[name]
    await call_llm("lazy imports", "lazyt", 10**7, "default")
    try:
        await call_llm("refused", "lazyt", 1, "default")
        out["refused"] = False
    except BudgetExceededError:
        out["refused"] = True
    out["after_hit_and_refusal"] = ["openai" in sys.modules, "anthropic" in sys.modules]
    print(json.dumps(out))
asyncio.run(main())
"""
    env = python_subprocess_env(
        OPENAI_API_KEY="k", OPENAI_BASE_URL=f"{live.url}/v1", ANTHROPIC_API_KEY="k", ANTHROPIC_BASE_URL=live.url
    )
    asyncio.run(_clear_cache_for("lazyt"))
    out = subprocess.run([PYTHON, "-c", script], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"after_miss": [True, False], "refused": True, "after_hit_and_refusal": [False, False]}


async def _clear_cache_for(t: str) -> None:
    from agent_patterns.backends.redis import current_client

    key = cache.cache_key(
        tenant_id=t,
        agent_type="default",
        model="default",
        system=None,
        prompt="lazy imports",
        temperature=0.0,
        max_tokens=1024,
    )
    await get_redis().delete(key)
    client = current_client()
    if client is not None:
        await client.aclose()
    reset_redis()


def test_provider_keys_can_come_from_secrets_manager(settings_env: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    from agent_patterns.llm.providers import api_key, configured

    with mock_aws():
        import boto3

        arn = boto3.client("secretsmanager").create_secret(Name="openai", SecretString="sk-from-secret")["ARN"]
        settings_env.delenv("OPENAI_API_KEY", raising=False)
        settings_env.setenv("OPENAI_API_KEY_SECRET_ARN", arn)
        reset_settings()
        assert configured("openai") and api_key("openai") == "sk-from-secret"


def test_the_llm_function_refuses_to_start_with_an_unpriced_model() -> None:
    env = python_subprocess_env(LLM_MODELS=json.dumps({"default": {"openai": "gpt-unknown"}}))
    script = "from agent_patterns_dev.gateway import load_function; load_function('llm')"
    out = subprocess.run([PYTHON, "-c", script], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode != 0 and "no price for model 'gpt-unknown'" in out.stderr


async def test_a_miss_costs_four_redis_round_trips(stub: StubProviders, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cache read + single-flight lock, reserve, settle, cache write + unlock: four scripts, and
    nothing else while the breaker is closed and quiet (MONITOR, top-level commands only)."""
    from redis.asyncio import Redis

    from agent_patterns.llm import breaker

    monkeypatch.setattr(breaker, "STATE_TTL_S", 60.0)  # a loaded machine must not make the state stale
    t = tenant()
    await call_llm(prompt(), t, BIG, "default")  # scripts loaded, counters seeded, limits cached
    watcher = Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    seen: list[str] = []
    async with watcher.monitor() as monitor:

        async def collect() -> None:
            while True:
                info = await monitor.next_command()
                if info["command"].endswith("round-trips-done"):
                    return
                if info.get("client_type") != "lua":
                    seen.append(info["command"].split()[0].upper())

        task = asyncio.create_task(collect())
        await asyncio.sleep(0.1)
        await call_llm(prompt(), t, BIG, "default")
        await get_redis().echo("round-trips-done")
        await asyncio.wait_for(task, 10)
    await watcher.aclose()
    assert seen == ["EVALSHA"] * 4, seen


def test_embeddings_decode_from_base64_and_from_json_lists() -> None:
    """OpenAI answers the base64 the gateway asks for (float32, little-endian); a server that
    ignores `encoding_format` answers JSON numbers: both are the same vector."""
    import base64
    import struct

    from agent_patterns.llm import providers

    vector = [0.5, -0.25, 1.0, 0.0]
    assert providers._vector(base64.b64encode(struct.pack("<4f", *vector)).decode()) == vector
    assert providers._vector(vector) == vector
