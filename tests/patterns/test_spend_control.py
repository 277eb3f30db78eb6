"""Spend control under faults: idempotent reservations, leases, the ledger, USD budgets, rates.

Real Redis and Postgres; providers are the stub servers over HTTP. Each property is asserted
from the stores (Redis counters, the Postgres ledger), after the fault.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest

from agent_patterns.backends import connection, get_redis
from agent_patterns.config import reset_settings
from agent_patterns.errors import BudgetExceededError, RateLimitedError, ValidationError
from agent_patterns.llm import budget, call_llm, ledger, limits
from agent_patterns.llm.pricing import price
from tests.llm_stub import StubProviders

BIG = 10_000_000


def tenant() -> str:
    return "s" + uuid.uuid4().hex[:12]


def prompt() -> str:
    return f"Summarise ticket {uuid.uuid4().hex}"


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


async def ledger_totals(tenant_id: str) -> tuple[int, int, int]:
    """(calls, tokens, nano-USD) the ledger holds for the tenant's provider calls."""
    async with connection() as db:
        cur = await db.execute(
            "SELECT count(*), coalesce(sum(tokens), 0), coalesce(sum(cost_nanousd), 0)"
            " FROM agent_patterns.llm_usage WHERE tenant_id = %s AND NOT cache_hit",
            (tenant_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def forget_counters(tenant_id: str) -> None:
    """What a Redis restart without persistence (or an eviction) does to a tenant's counters."""
    keys = [k async for k in get_redis().scan_iter(match=f"{budget.prefix(tenant_id)}*")]
    if keys:
        await get_redis().delete(*keys)


LIMITS = budget.Limits(daily_tokens=1_000)


async def test_a_retried_reserve_or_settle_counts_once() -> None:
    t, rid = tenant(), str(uuid.uuid4())
    first = await budget.reserve(t, 300, 0, LIMITS, lease_seconds=60, reservation_id=rid)
    again = await budget.reserve(t, 300, 0, LIMITS, lease_seconds=60, reservation_id=rid)  # a retried script
    assert isinstance(first, budget.Reservation) and isinstance(again, budget.Reservation)
    assert (await budget.usage(t)).reserved == 300
    for _ in range(3):  # the settlement's reply is lost and the script runs again
        await budget.settle(t, rid, first.day, 120, 5)
    assert await budget.usage(t) == budget.Usage(used=120, reserved=0, used_nanousd=5, reserved_nanousd=0)
    await budget.release(first)  # a release after the settlement changes nothing
    assert await budget.usage(t) == budget.Usage(used=120, reserved=0, used_nanousd=5, reserved_nanousd=0)


async def test_a_killed_call_frees_its_reservation_when_the_lease_expires() -> None:
    t = tenant()
    dead = await budget.reserve(t, 900, 0, LIMITS, lease_seconds=0.3)
    assert isinstance(dead, budget.Reservation)
    refused = await budget.reserve(t, 200, 0, LIMITS, lease_seconds=60)
    assert isinstance(refused, budget.Refusal) and refused.reserved == 900  # the lease still holds
    await asyncio.sleep(0.4)
    granted = await budget.reserve(t, 200, 0, LIMITS, lease_seconds=60)  # reaps the expired one first
    assert isinstance(granted, budget.Reservation)
    assert (await budget.usage(t)).reserved == 200
    assert not await get_redis().hexists(budget.prefix(t) + "res", dead.id)


async def test_a_late_settlement_of_a_reaped_reservation_still_counts_once() -> None:
    t = tenant()
    slow = await budget.reserve(t, 400, 0, LIMITS, lease_seconds=0.2)
    assert isinstance(slow, budget.Reservation)
    await asyncio.sleep(0.3)
    other = await budget.reserve(t, 100, 0, LIMITS, lease_seconds=60)  # reaps `slow`
    assert isinstance(other, budget.Reservation)
    await budget.settle(t, slow.id, slow.day, 250, 0)
    await budget.settle(t, slow.id, slow.day, 250, 0)
    usage = await budget.usage(t)
    assert (usage.used, usage.reserved) == (250, 100)


async def test_counters_lost_by_redis_are_rebuilt_from_the_ledger(stub: StubProviders) -> None:
    t, daily = tenant(), 4_000
    spent = 0
    while True:
        try:
            spent += (await call_llm(prompt(), t, daily, "default", max_tokens=200)).tokens_used
        except BudgetExceededError:
            break
    calls, tokens, _ = await ledger_totals(t)
    assert tokens == spent and calls == stub.calls["openai"]
    await forget_counters(t)  # Redis restarted empty: the day's usage must not read 0
    with pytest.raises(BudgetExceededError):
        await call_llm(prompt(), t, daily, "default", max_tokens=200)
    assert (await budget.usage(t)).used == spent
    assert (await ledger_totals(t))[1] == spent and stub.calls["openai"] == calls


async def test_a_settlement_redis_missed_is_applied_from_the_ledger_after_the_lease(
    stub: StubProviders, settings_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_env.setenv("LLM_TOTAL_TIMEOUT_SECONDS", "0.5")
    settings_env.setenv("LLM_ATTEMPT_TIMEOUT_SECONDS", "0.5")
    settings_env.setenv("LLM_RESERVATION_MARGIN_SECONDS", "0")
    reset_settings()
    t = tenant()
    real_settle = budget.settle

    async def redis_gone(*args: Any, **kwargs: Any) -> int:
        from redis.exceptions import ConnectionError

        raise ConnectionError("Redis went away")

    monkeypatch.setattr(budget, "settle", redis_gone)
    first = await call_llm(prompt(), t, BIG, "default", max_tokens=50)
    monkeypatch.setattr(budget, "settle", real_settle)
    usage = await budget.usage(t)
    assert usage.used == 0 and usage.reserved > 0  # the settlement never reached Redis
    assert (await ledger_totals(t))[1] == first.tokens_used  # but the ledger has it
    await asyncio.sleep(0.6)
    second = await call_llm(prompt(), t, BIG, "default", max_tokens=50)  # reaps, applies from the ledger
    usage = await budget.usage(t)
    assert usage.used == first.tokens_used + second.tokens_used and usage.reserved == 0


async def test_a_row_postgres_refused_waits_in_the_outbox_and_lands_later(
    stub: StubProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = tenant()
    real_record = ledger.record

    async def postgres_gone(*entries: ledger.Entry) -> None:
        from agent_patterns.errors import BackendUnavailableError

        raise BackendUnavailableError("Postgres is unreachable")

    monkeypatch.setattr(ledger, "record", postgres_gone)
    first = await call_llm(prompt(), t, BIG, "default", max_tokens=50)
    monkeypatch.setattr(ledger, "record", real_record)
    assert (await ledger_totals(t))[0] == 0
    assert (await budget.usage(t)).used == first.tokens_used  # the counters have it already
    assert await get_redis().llen(budget.OUTBOX_KEY) >= 1
    second = await call_llm(prompt(), t, BIG, "default", max_tokens=50)  # reaches Postgres: flushes
    assert await ledger_totals(t) == (2, first.tokens_used + second.tokens_used, (await ledger_totals(t))[2])
    assert (await budget.usage(t)).used == first.tokens_used + second.tokens_used


async def test_a_usd_budget_is_never_passed(stub: StubProviders) -> None:
    t = tenant()
    # Room for a few worst cases of gpt-4o / claude-sonnet-5-5 at max_tokens=300, not for many.
    await limits.set_overrides(t, {"daily_usd": Decimal("0.005")}, updated_by="test")
    spent = 0
    refusal: BudgetExceededError | None = None
    for _ in range(40):
        try:
            await call_llm(prompt(), t, BIG, "default", max_tokens=300)
        except BudgetExceededError as exc:
            refusal = exc
            break
        spent += 1
    assert refusal is not None and "daily USD budget of $0.005000" in str(refusal)
    usage = await budget.usage(t)
    _, _, nano = await ledger_totals(t)
    assert usage.used_nanousd == nano <= 5_000_000 and spent >= 1
    worst = (len(prompt()) + 16) * max(price("gpt-4o").input, price("claude-sonnet-5-5").cache_write) + 300 * price(
        "claude-sonnet-5-5"
    ).output
    assert nano + worst * 1000 > 5_000_000  # refused only when the worst case would not fit


async def test_rate_limits_refuse_with_openai_headers(stub: StubProviders) -> None:
    t = tenant()
    await limits.set_overrides(t, {"requests_per_minute": 3}, updated_by="test")
    results = [await call_llm(prompt(), t, BIG, "default", max_tokens=20) for _ in range(3)]
    assert [r.rate.remaining_requests for r in results if r.rate] == [2, 1, 0]
    with pytest.raises(RateLimitedError) as info:
        await call_llm(prompt(), t, BIG, "default", max_tokens=20)
    headers = info.value.headers
    assert info.value.status_code == 429 and headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(headers["Retry-After"]) <= 61 and headers["x-ratelimit-reset-requests"].endswith("s")
    assert stub.calls["openai"] == 3


async def test_a_call_larger_than_the_tokens_per_minute_is_a_clear_422(stub: StubProviders) -> None:
    t = tenant()
    await limits.set_overrides(t, {"tokens_per_minute": 100}, updated_by="test")
    with pytest.raises(ValidationError, match="tokens per minute"):
        await call_llm(prompt(), t, BIG, "default", max_tokens=200)
    assert stub.calls["openai"] == 0


async def test_an_override_takes_effect_and_clearing_it_restores_the_default(
    stub: StubProviders, settings_env: pytest.MonkeyPatch
) -> None:
    settings_env.setenv("LLM_LIMITS_CACHE_SECONDS", "0")
    reset_settings()
    t = tenant()
    await limits.set_overrides(t, {"daily_tokens": 10}, updated_by="ops")
    with pytest.raises(BudgetExceededError, match="daily token budget of 10 "):
        await call_llm(prompt(), t, BIG, "default", max_tokens=20)
    await limits.set_overrides(t, {"daily_tokens": None}, updated_by="ops")
    assert (await limits.limits_for(t, BIG)).daily_tokens == BIG
    await call_llm(prompt(), t, BIG, "default", max_tokens=20)


async def test_a_monthly_budget_counts_every_day_of_the_month_and_retries_next_month(stub: StubProviders) -> None:
    t = tenant()
    await limits.set_overrides(t, {"monthly_tokens": 400}, updated_by="test")
    first = today().replace(day=1).isoformat()  # usage on the 1st counts on every day of the month
    await ledger.record(ledger.Entry(str(uuid.uuid4()), t, first, "openai", "gpt-4o", tokens=300, cost_nanousd=1))
    with pytest.raises(BudgetExceededError, match="monthly token budget of 400 exhausted") as info:
        await call_llm(prompt(), t, BIG, "default", max_tokens=100)
    first_of_next = dt.datetime.combine(budget.next_month(today()), dt.time(), tzinfo=dt.UTC)
    expected = (first_of_next - dt.datetime.now(dt.UTC)).total_seconds()
    assert abs(int(info.value.headers["Retry-After"]) - expected) <= 2
    assert stub.calls["openai"] == 0


async def test_cache_hits_reach_the_ledger_in_one_row_with_the_next_write(stub: StubProviders) -> None:
    t, p = tenant(), prompt()
    await call_llm(p, t, BIG, "default", max_tokens=20)
    for _ in range(5):
        assert (await call_llm(p, t, BIG, "default", max_tokens=20)).cached
    async with connection() as db:
        cur = await db.execute("SELECT count(*) FROM agent_patterns.llm_usage WHERE tenant_id = %s AND cache_hit", (t,))
        assert (await cur.fetchone()) == (0,)  # a hit costs no Postgres round trip
    await call_llm(prompt(), t, BIG, "default", max_tokens=20)  # the next write carries them
    async with connection() as db:
        cur = await db.execute(
            "SELECT calls, tokens, cost_nanousd FROM agent_patterns.llm_usage WHERE tenant_id = %s AND cache_hit",
            (t,),
        )
        assert await cur.fetchall() == [(5, 0, 0)]
