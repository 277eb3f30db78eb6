"""Spend control under real faults: a TCP proxy between the pattern and a real redis-server
drops replies after Redis executed the script, Redis is killed and restarted (with and without
persistence), calls are killed mid-flight (SIGKILL of the process), providers fail at random,
and two processes share rate limits. Each property is asserted from the stores afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from agent_patterns.backends import connection, get_redis, reset_redis
from agent_patterns.backends.redis import current_client
from agent_patterns.config import reset_settings
from agent_patterns.errors import (
    BackendUnavailableError,
    BudgetExceededError,
    ProvidersUnavailableError,
)
from agent_patterns.llm import budget, call_llm, limits
from agent_patterns.llm.call import LLMResult
from tests.conftest import PYTHON, ROOT, LiveServer, python_subprocess_env
from tests.fault_proxy import FaultProxy
from tests.llm_stub import StubProviders
from tests.redis_process import Persistence, RedisProcess

DEADLINE_S, MARGIN_S = 2.0, 2.0  # a call's deadline, and how long its lease outlasts it
LEASE_S = DEADLINE_S + MARGIN_S


def tenant() -> str:
    return "f" + uuid.uuid4().hex[:12]


def prompt() -> str:
    return f"Summarise ticket {uuid.uuid4().hex}"


class Faulty:
    """A real redis-server behind a fault proxy, with the pattern's client pointed at the proxy."""

    def __init__(self, server: RedisProcess, proxy: FaultProxy) -> None:
        self.server = server
        self.proxy = proxy
        self.direct = Redis(host=server.host, port=server.port, decode_responses=True)

    def budget_faults(self, drop: float, reset: float) -> None:
        """Budget scripts lose their reply after Redis ran them (`drop`), or are cut mid-request
        before Redis has them whole (`reset`)."""
        shas = (budget.RESERVE.sha.encode(), budget.SETTLE.sha.encode())

        def is_budget(chunk: bytes) -> bool:
            return any(s in chunk for s in shas)

        self.proxy.drop_reply_after_execution(is_budget, probability=drop)
        self.proxy.reset_mid_request(is_budget, probability=reset)


@pytest.fixture
async def faulty(
    request: pytest.FixtureRequest, tmp_path: Path, settings_env: pytest.MonkeyPatch, stub: StubProviders
) -> AsyncIterator[Faulty]:
    persistence: Persistence = getattr(request, "param", "none")
    with (
        RedisProcess(persistence, dir=tmp_path / "redis") as server,
        FaultProxy(server.host, server.port, seed=11) as proxy,
    ):
        settings_env.setenv("REDIS_URL", proxy.url())
        settings_env.setenv("LLM_TOTAL_TIMEOUT_SECONDS", str(DEADLINE_S))
        settings_env.setenv("LLM_ATTEMPT_TIMEOUT_SECONDS", str(DEADLINE_S))
        settings_env.setenv("LLM_RESERVATION_MARGIN_SECONDS", str(MARGIN_S))
        settings_env.setenv("LLM_MAX_ATTEMPTS", "1")
        settings_env.setenv("LLM_BREAKER_THRESHOLD", "100000")
        settings_env.setenv("REDIS_SOCKET_TIMEOUT", "2")
        reset_settings()
        await _drop_client()
        faults = Faulty(server, proxy)
        for script in (budget.RESERVE, budget.SETTLE, budget.SEED):
            await get_redis().script_load(script.text)
        try:
            yield faults
        finally:
            await faults.direct.aclose()
            await _drop_client()
    assert proxy.errors == []


async def _drop_client() -> None:
    client = current_client()
    if client is not None:
        await client.aclose()
    reset_redis()


async def ledger_totals(tenant_id: str) -> tuple[int, int]:
    async with connection() as db:
        cur = await db.execute(
            "SELECT coalesce(sum(tokens), 0), coalesce(sum(cost_nanousd), 0) FROM agent_patterns.llm_usage"
            " WHERE tenant_id = %s AND NOT cache_hit",
            (tenant_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def counters(faults: Faulty, tenant_id: str) -> budget.Usage:
    day = budget.day_key(tenant_id, time_today())
    values = await faults.direct.hmget(day, ["used_tokens", "reserved_tokens", "used_nanousd", "reserved_nanousd"])
    return budget.Usage(*(int(v or 0) for v in values))


def time_today() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC).date()


class Watch:
    """Samples the tenant's counters straight from Redis while the scenario runs."""

    def __init__(self, faults: Faulty, tenant_id: str) -> None:
        self.faults, self.tenant_id = faults, tenant_id
        self.peak_tokens = self.peak_nanousd = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                now = await counters(self.faults, self.tenant_id)
                self.peak_tokens = max(self.peak_tokens, now.used + now.reserved)
                self.peak_nanousd = max(self.peak_nanousd, now.used_nanousd + now.reserved_nanousd)
            except Exception:  # noqa: S110 - Redis restarting: nothing to sample
                pass
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


EXPECTED = (BudgetExceededError, ProvidersUnavailableError, BackendUnavailableError)


def outcomes(results: list[Any]) -> list[LLMResult]:
    unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, EXPECTED)]
    assert not unexpected, repr(unexpected[:3])
    return [r for r in results if isinstance(r, LLMResult)]


async def settle_leases(tenant_id: str) -> None:
    """Wait out every lease, then let budget operations reap what the faults left behind: an
    expired reservation whose reaper failed mid-way is reaped again after REAP_CLAIM_S."""
    await asyncio.sleep(LEASE_S + 0.2)
    deadline = time.monotonic() + budget.REAP_CLAIM_S + 1
    while True:
        probe = await budget.reserve(tenant_id, 1, 0, budget.Limits(), lease_seconds=60)
        assert isinstance(probe, budget.Reservation)
        await budget.release(probe)
        if (await budget.usage(tenant_id)).reserved == 0 or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.25)


KILLED = """
import asyncio, os, sys
from agent_patterns.llm import call_llm
async def main():
    await asyncio.gather(*(call_llm(f"doomed {i} {os.getpid()}", sys.argv[1], 10**9, "default", max_tokens=30)
                           for i in range(20)), return_exceptions=True)
asyncio.run(main())
"""


def start_doomed_calls(tenant_id: str, redis_url: str, slow: LiveServer) -> subprocess.Popen[str]:
    """20 calls in another process, stuck on a slow provider, to be SIGKILLed mid-flight."""
    env = python_subprocess_env(
        REDIS_URL=redis_url,
        OPENAI_API_KEY="k",
        OPENAI_BASE_URL=f"{slow.url}/v1",
        ANTHROPIC_API_KEY="k",
        ANTHROPIC_BASE_URL=slow.url,
        LLM_TOTAL_TIMEOUT_SECONDS=str(DEADLINE_S),
        LLM_ATTEMPT_TIMEOUT_SECONDS=str(DEADLINE_S),
        LLM_RESERVATION_MARGIN_SECONDS=str(MARGIN_S),
    )
    return subprocess.Popen([PYTHON, "-c", KILLED, tenant_id], env=env, cwd=ROOT, text=True, start_new_session=True)


@pytest.fixture(scope="module")
def slow_provider() -> Iterator[LiveServer]:
    providers = StubProviders()
    providers.default = {"openai": {"delay": 3}, "anthropic": {"delay": 3}, "embeddings": {}}
    with LiveServer(providers.app()) as live:
        yield live


@pytest.mark.parametrize("measure", ["tokens", "usd"])
async def test_lost_replies_killed_calls_and_failing_providers_never_overspend(
    faulty: Faulty, stub: StubProviders, slow_provider: LiveServer, measure: str
) -> None:
    t = tenant()
    if measure == "tokens":
        daily, cap = 6_000, 6_000
    else:
        daily, cap = 10**9, 50_000_000  # $0.05: binds at about a hundred worst cases in flight
        await limits.set_overrides(t, {"daily_usd": Decimal(cap) / 10**9}, updated_by="test")
    doomed = start_doomed_calls(t, faulty.server.url, slow_provider)
    try:
        deadline = time.monotonic() + 30
        while await faulty.direct.hlen(budget.prefix(t) + "res") < 20:  # all twenty reserved, now stuck
            assert doomed.poll() is None and time.monotonic() < deadline, "the doomed calls never reserved"
            await asyncio.sleep(0.05)
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)  # a Lambda timeout or OOM: no finally block runs
        doomed.wait()
    stub.default["openai"] = {"random_failure": 0.3}
    stub.default["anthropic"] = {"random_failure": 0.3}
    faulty.budget_faults(drop=0.2, reset=0.05)
    watch = Watch(faulty, t)
    results = await asyncio.gather(
        *(call_llm(prompt(), t, daily, "default", max_tokens=30) for _ in range(220)), return_exceptions=True
    )
    faulty.proxy.clear_faults()
    ok = outcomes(results)
    await settle_leases(t)
    await watch.stop()
    assert faulty.proxy.dropped > 10 and faulty.proxy.resets > 0  # the faults did happen
    assert ok and any(isinstance(r, BudgetExceededError) for r in results)
    now = await counters(faulty, t)
    ledger_tokens, ledger_nano = await ledger_totals(t)
    assert now.used == ledger_tokens == sum(r.tokens_used for r in ok)  # exactly what providers reported
    assert now.used_nanousd == ledger_nano
    assert now.reserved == 0 and now.reserved_nanousd == 0  # killed calls and lost replies freed
    if measure == "tokens":
        assert watch.peak_tokens <= daily and now.used <= daily
    else:
        assert watch.peak_nanousd <= cap and now.used_nanousd <= cap
    stub.default["openai"] = stub.default["anthropic"] = {}
    after = await call_llm(prompt(), t, daily, "default", max_tokens=5)  # not locked out
    assert after.tokens_used > 0


@pytest.mark.parametrize("faulty", ["none", "aof"], indirect=True)
async def test_a_redis_restart_mid_run_cannot_grant_the_day_twice(faulty: Faulty, stub: StubProviders) -> None:
    """Redis dies (SIGKILL) while the day's reservations are held by calls still at the provider.
    With AOF it comes back with them; without persistence they are gone, the counters are rebuilt
    from the ledger, and the tenant (active just before) is held for one lease, until the calls
    that were in flight have settled, instead of being granted their room a second time."""
    t, daily = tenant(), 3_000
    watch = Watch(faulty, t)
    settled = await call_llm(prompt(), t, daily, "default", max_tokens=30)  # the tenant is active
    stub.default["openai"] = {"delay": 1.5}  # the next calls are still at the provider when Redis dies
    wave = asyncio.gather(
        *(call_llm(prompt(), t, daily, "default", max_tokens=30) for _ in range(60)), return_exceptions=True
    )
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # granted up to the day's budget, none answered yet
        now = await counters(faulty, t)
        if now.used + now.reserved > daily - 100:
            break
        await asyncio.sleep(0.02)
    in_flight = (await counters(faulty, t)).reserved
    stub.default["openai"] = {}
    await asyncio.to_thread(faulty.server.restart, kill=True)
    during = await asyncio.gather(
        *(call_llm(prompt(), t, daily, "default", max_tokens=30) for _ in range(60)), return_exceptions=True
    )
    first = await wave
    if faulty.server.persistence == "none":  # held until the calls in flight have settled
        assert during and all(isinstance(r, BackendUnavailableError) for r in during), during[:3]
        held = during[0]
        assert isinstance(held, BackendUnavailableError) and "lost its state" in held.message
        assert int(held.headers["Retry-After"]) <= LEASE_S + 1
        hold = await faulty.direct.hget(budget.day_key(t, time_today()), "hold_until")
        assert hold is not None and float(hold) > 0  # the rebuilt counter carries the hold
        await asyncio.sleep(max(0.0, float(hold) - time.time() + 0.1))  # it ends one lease after Redis began
    after = await asyncio.gather(
        *(call_llm(prompt(), t, daily, "default", max_tokens=30) for _ in range(120)), return_exceptions=True
    )
    ok = outcomes([settled, *first, *during, *after])
    await settle_leases(t)
    await watch.stop()
    spent = sum(r.tokens_used for r in ok)
    assert in_flight > daily // 2  # the kill caught most of the day in flight
    assert spent <= daily  # a restart that forgot the calls in flight would have granted their room again
    assert any(isinstance(r, BudgetExceededError) for r in after)
    now = await counters(faulty, t)
    assert now.used == (await ledger_totals(t))[0] == spent and now.reserved == 0
    assert watch.peak_tokens <= daily


RATE_BURST = """
import asyncio, json, sys, uuid
from agent_patterns.llm import call_llm
from agent_patterns.errors import RateLimitedError
async def main():
    results = await asyncio.gather(*(call_llm(f"burst {uuid.uuid4()}", sys.argv[1], 10**9, "default", max_tokens=5)
                                     for _ in range(30)), return_exceptions=True)
    print(json.dumps({"ok": sum(not isinstance(r, BaseException) for r in results),
                      "limited": sum(isinstance(r, RateLimitedError) for r in results),
                      "other": [repr(r) for r in results if isinstance(r, BaseException) and not isinstance(r, RateLimitedError)]}))
asyncio.run(main())
"""


async def test_two_processes_share_one_rate_limit(
    stub: StubProviders, stub_server: tuple[StubProviders, LiveServer]
) -> None:
    _, live = stub_server
    t = tenant()
    await limits.set_overrides(t, {"requests_per_minute": 20}, updated_by="test")
    env = python_subprocess_env(
        OPENAI_API_KEY="k", OPENAI_BASE_URL=f"{live.url}/v1", ANTHROPIC_API_KEY="k", ANTHROPIC_BASE_URL=live.url
    )
    while time.time() % 60 > 50:  # both bursts inside one minute window
        await asyncio.sleep(0.5)
    started = time.time()
    procs = [
        await asyncio.create_subprocess_exec(PYTHON, "-c", RATE_BURST, t, env=env, cwd=ROOT, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    outs = [json.loads((await p.communicate())[0].decode().strip().splitlines()[-1]) for p in procs]
    windows = int(time.time() // 60) - int(started // 60) + 1
    assert all(o["other"] == [] for o in outs), outs
    admitted = sum(o["ok"] for o in outs)
    assert admitted == stub.calls["openai"]
    assert admitted <= 20 * windows and sum(o["limited"] for o in outs) >= 60 - 20 * windows
    assert all(o["ok"] > 0 for o in outs) or windows == 1  # both processes drew from one shared count
