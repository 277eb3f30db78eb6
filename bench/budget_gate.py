"""Budget gate: reserve + settle pairs per second, today's design against the new one with its ledger.

On the embedded Redis and Postgres (both on unix sockets, a bench-only data dir), interleaved in
rounds (the order of the designs rotates each round), each design runs its pairs sequentially
(concurrency 1: latency of one pair) and with N tasks in flight in one event loop:

(a) today's design before the ledger (commit 0efb9be): one RESERVE script (HINCRBY on a per-day
    hash) and one SETTLE script, copied here as the baseline;
(b) the new `budget.reserve` + `budget.settle` (idempotent by id, leases, USD and rate limits in
    one script each), without the ledger write;
(c) (b) with `ledger.record` in between: the budget work of a real miss path (the ledger row is
    durable before the counters change);
(d) (c) with the ledger's commit not waiting for the WAL flush (`synchronous_commit=off` on the
    connection): a diagnostic of what the flush costs, not a design (a crash can lose the row).

Each run uses a fresh tenant (budgets never refuse) whose counters are seeded by untimed warm-up
pairs; limits are unlimited except a large daily token budget, so the scripts' checks run. The
first pair of a fresh tenant (counters seeded from the ledger) is timed apart. Floors: a Redis
PING and a Postgres `SELECT 1` round trip. CPU per pair: this process (time.process_time), the
Redis server (INFO cpu) and our Postgres backend (psutil), over each timed run. The headline is
the median over rounds of each round's p50 difference, (c) - (a), sequential.

    nice uv run python bench/budget_gate.py [--rounds 7] [--pairs 500] [--concurrent-pairs 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

# Today's design (layers/patterns/agent_patterns/llm/budget.py at 0efb9be), verbatim.
OLD_RESERVE = """
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local amount = tonumber(ARGV[1])
if used + reserved + amount > tonumber(ARGV[2]) then
  return {0, used, reserved}
end
redis.call('HINCRBY', KEYS[1], 'reserved', amount)
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return {1, used, reserved + amount}
"""
OLD_SETTLE = """
redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(ARGV[1]))
if tonumber(ARGV[2]) > 0 then redis.call('HINCRBY', KEYS[1], 'used', ARGV[2]) end
return 1
"""

AMOUNT = 1_100  # tokens reserved per call (prompt bytes + overhead + max_tokens)
NANOUSD = 11_000_000  # its worst-case price
DAILY_TOKENS = 10**15  # large: never refuses, but the check runs
LEASE_S = 55.0  # LLM_TOTAL_TIMEOUT_SECONDS + LLM_RESERVATION_MARGIN_SECONDS (defaults)
WARMUP = 10
DESIGNS = {
    "a": "(a) today: RESERVE + SETTLE",
    "b": "(b) new, no ledger: reserve + settle",
    "c": "(c) new + ledger: reserve + record + settle",
    "d": "(d) = (c), synchronous_commit=off",
}

Pair = Callable[[str, int], Awaitable[int]]  # (tenant, i) -> tokens settled


def actual_tokens(i: int) -> int:
    return 300 + i % 700


async def old_pair(tenant: str, i: int) -> int:
    from agent_patterns.backends import get_redis

    today = dt.datetime.now(dt.UTC).date()
    key = f"budget:{tenant}:{today.isoformat()}"
    expire_at = int(dt.datetime.combine(today + dt.timedelta(days=2), dt.time(), tzinfo=dt.UTC).timestamp())
    ok, _, _ = await get_redis().eval(OLD_RESERVE, 1, key, AMOUNT, DAILY_TOKENS, expire_at)
    assert int(ok) == 1
    actual = actual_tokens(i)
    await get_redis().eval(OLD_SETTLE, 1, key, AMOUNT, actual)
    return actual


async def new_pair(tenant: str, i: int, *, with_ledger: bool) -> int:
    from agent_patterns.llm import budget, ledger

    r = await budget.reserve(tenant, AMOUNT, NANOUSD, budget.Limits(daily_tokens=DAILY_TOKENS), lease_seconds=LEASE_S)
    assert isinstance(r, budget.Reservation), r
    actual = actual_tokens(i)
    nano = actual * 10_000
    if with_ledger:  # what llm.call._settle does: the row first, then the counters
        await ledger.record(
            ledger.Entry(
                reservation_id=r.id,
                tenant_id=tenant,
                day=r.day.isoformat(),
                provider="openai",
                model="gpt-4o",
                tokens=actual,
                cost_nanousd=nano,
                input_tokens=100,
                output_tokens=actual - 100,
                latency_ms=1.5,
            )
        )
    await budget.settle(tenant, r.id, r.day, actual, nano)
    return actual


async def pair_b(tenant: str, i: int) -> int:
    return await new_pair(tenant, i, with_ledger=False)


async def pair_c(tenant: str, i: int) -> int:
    return await new_pair(tenant, i, with_ledger=True)


PAIRS: dict[str, Pair] = {"a": old_pair, "b": pair_b, "c": pair_c, "d": pair_c}


async def commit_mode(design: str) -> None:
    """(d) is (c) with the ledger's commit not waiting for the WAL flush (a diagnostic: what the
    flush costs); every other design runs with the server's default."""
    from agent_patterns.backends import connection

    async with connection() as db:
        await db.execute("SET synchronous_commit = off" if design == "d" else "SET synchronous_commit TO DEFAULT")


async def check_exact(design: str, tenant: str, settled: int, count: int) -> bool:
    """The counters hold exactly what was settled, nothing stays reserved; (c): the ledger too."""
    from agent_patterns.backends import connection, get_redis
    from agent_patterns.llm import budget

    if design == "a":
        key = f"budget:{tenant}:{dt.datetime.now(dt.UTC).date().isoformat()}"
        used, reserved = await get_redis().hmget(key, ["used", "reserved"])
        return (int(used or 0), int(reserved or 0)) == (settled, 0)
    usage = await budget.usage(tenant)
    ok = (usage.used, usage.reserved) == (settled, 0)
    if design in ("c", "d"):
        async with connection() as db:
            cur = await db.execute(
                "SELECT count(*), coalesce(sum(tokens), 0) FROM agent_patterns.llm_usage WHERE tenant_id = %s",
                (tenant,),
            )
            row = await cur.fetchone()
        ok = ok and row is not None and (int(row[0]), int(row[1])) == (count, settled)
    return ok


class Results:
    def __init__(self) -> None:
        self.lat: dict[tuple[str, str], list[float]] = {}
        self.rate: dict[tuple[str, str], list[float]] = {}
        self.round_p50: dict[tuple[str, str], list[float]] = {}
        self.cpu: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        self.exact = True

    def add(
        self, design: str, mode: str, samples: list[float], elapsed: float | None, cpu: tuple[float, ...] = ()
    ) -> None:
        self.lat.setdefault((design, mode), []).extend(samples)
        self.round_p50.setdefault((design, mode), []).append(statistics.median(samples))
        if elapsed is not None:
            self.rate.setdefault((design, mode), []).append(len(samples) / elapsed)
        if cpu:
            c, r, p = (1000 * x / len(samples) for x in cpu)  # ms of CPU per pair
            self.cpu.setdefault((design, mode), []).append((c, r, p))


class Cpu:
    """CPU seconds used by this process, the Redis server and our Postgres backend."""

    pg_pid = 0

    @classmethod
    async def now(cls) -> tuple[float, float, float]:
        import psutil

        from agent_patterns.backends import connection, get_redis

        if not cls.pg_pid:
            async with connection() as db:
                cur = await db.execute("SELECT pg_backend_pid()")
                row = await cur.fetchone()
            assert row is not None
            cls.pg_pid = int(row[0])
        info = await get_redis().info("cpu")
        pg = psutil.Process(cls.pg_pid).cpu_times()
        return time.process_time(), float(info["used_cpu_sys"]) + float(info["used_cpu_user"]), pg.user + pg.system

    @classmethod
    async def since(cls, before: tuple[float, float, float]) -> tuple[float, float, float]:
        after = await cls.now()
        return after[0] - before[0], after[1] - before[1], after[2] - before[2]


def tenant_id() -> str:
    return "bg" + uuid.uuid4().hex[:12]


async def sequential(design: str, pairs: int, res: Results) -> None:
    await commit_mode(design)
    fn, t = PAIRS[design], tenant_id()
    settled = sum([await fn(t, i) for i in range(WARMUP)])
    samples = []
    cpu = await Cpu.now()
    started = time.perf_counter()
    for i in range(pairs):
        s = time.perf_counter()
        settled += await fn(t, i)
        samples.append((time.perf_counter() - s) * 1000)
    elapsed = time.perf_counter() - started
    res.add(design, "sequential", samples, elapsed, await Cpu.since(cpu))
    res.exact &= await check_exact(design, t, settled, WARMUP + pairs)


async def concurrent(design: str, pairs: int, inflight: int, res: Results) -> None:
    await commit_mode(design)
    fn, t = PAIRS[design], tenant_id()
    settled = [await fn(t, i) for i in range(WARMUP)]
    samples: list[float] = []
    todo = iter(range(pairs))

    async def worker() -> None:
        for i in todo:
            s = time.perf_counter()
            settled.append(await fn(t, i))
            samples.append((time.perf_counter() - s) * 1000)

    cpu = await Cpu.now()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    elapsed = time.perf_counter() - started
    res.add(design, f"{inflight} in flight", samples, elapsed, await Cpu.since(cpu))
    res.exact &= await check_exact(design, t, sum(settled), len(settled))


async def first_pairs(design: str, tenants: int, res: Results) -> None:
    """The first pair of a fresh tenant: (b) and (c) seed its counters from the ledger first."""
    await commit_mode(design)
    fn, samples = PAIRS[design], []
    for i in range(tenants):
        t = tenant_id()
        s = time.perf_counter()
        await fn(t, i)
        samples.append((time.perf_counter() - s) * 1000)
    res.add(design, "first pair", samples, None)


async def floors(n: int, res: Results) -> None:
    from agent_patterns.backends import connection, get_redis

    async def ping() -> None:
        await get_redis().ping()

    async def select1() -> None:
        async with connection() as db:
            await db.execute("SELECT 1")

    for name, fn in (("Redis PING", ping), ("Postgres SELECT 1", select1)):
        samples = []
        for _ in range(n):
            s = time.perf_counter()
            await fn()
            samples.append((time.perf_counter() - s) * 1000)
        res.add(name, "round trip", samples, None)


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def report(res: Results, modes: list[str]) -> None:
    print(
        f"\n{'design':44} {'mode':12} {'pairs/s':>7} {'vs (a)':>6} {'p50 ms':>7} {'p99 ms':>7} {'p50 vs (a)':>10}"
        "   CPU ms/pair: bench Redis PG"
    )
    for mode in modes:
        base_rate = statistics.median(res.rate[("a", mode)]) if mode != "first pair" else 0.0
        base_p50 = statistics.median(res.lat[("a", mode)])
        for d, name in DESIGNS.items():
            lat = res.lat[(d, mode)]
            p50 = statistics.median(lat)
            if (d, mode) in res.rate:
                rate = statistics.median(res.rate[(d, mode)])
                rates = f"{rate:7,.0f} {rate / base_rate:5.2f}x"
            else:
                rates = f"{'':7} {'':6}"
            cpu = ""
            if (d, mode) in res.cpu:
                c, r, p = (statistics.median(x) for x in zip(*res.cpu[(d, mode)], strict=True))
                cpu = f"{c:17.3f} {r:5.3f} {p:5.3f}"
            print(f"{name:44} {mode:12} {rates} {p50:7.3f} {pct(lat, 0.99):7.3f} {p50 - base_p50:+8.3f}ms {cpu}")
    for name in ("Redis PING", "Postgres SELECT 1"):
        lat = res.lat[(name, "round trip")]
        print(
            f"{name + ' (floor)':44} {'round trip':12} {'':7} {'':6} {statistics.median(lat):7.3f} {pct(lat, 0.99):7.3f}"
        )

    seq = "sequential"

    def over(x: str, y: str) -> tuple[float, float, float]:
        diffs = [a - b for a, b in zip(res.round_p50[(x, seq)], res.round_p50[(y, seq)], strict=True)]
        return statistics.median(diffs), min(diffs), max(diffs)

    added = over("c", "a")
    print(
        f"\nadded median ms per pair, sequential (median of the rounds' p50 differences, range over rounds):\n"
        f"  (c) over (a), the miss path's budget work: {added[0]:+.3f} ms ({added[1]:+.3f} to {added[2]:+.3f}); "
        f"goal <= +1 ms: {'met' if added[0] <= 1 else 'NOT met'}"
    )
    for x, y, what in (
        ("b", "a", "the new scripts"),
        ("c", "b", "the ledger write"),
        ("d", "a", "(d) over (a), no WAL flush wait"),
    ):
        m, lo, hi = over(x, y)
        label = what if x == "d" else f"({x}) over ({y}), {what}"
        print(f"  {label}: {m:+.3f} ms ({lo:+.3f} to {hi:+.3f})")
    print(f"counters == sum of settled, nothing left reserved, (c)/(d) ledger rows == pairs: {res.exact}")


async def run(args: argparse.Namespace) -> None:
    from agent_patterns.backends import connection
    from agent_patterns.backends.migrations import ensure_global
    from agent_patterns.llm.ledger import USAGE

    async with connection() as db:  # the ledger table exists before anything is timed
        await ensure_global(db, USAGE)
        cur = await db.execute("SELECT version(), current_setting('synchronous_commit'), current_setting('fsync')")
        row = await cur.fetchone()
    assert row is not None
    print(f"{row[0].split(',')[0]}; synchronous_commit={row[1]}, fsync={row[2]}")
    res = Results()
    inflight = f"{args.concurrency} in flight"
    order = list(DESIGNS)
    for r in range(args.rounds):
        started = time.perf_counter()
        await floors(200, res)
        for d in order:
            await sequential(d, args.pairs, res)
        for d in order:
            await concurrent(d, args.concurrent_pairs, args.concurrency, res)
        for d in order:
            await first_pairs(d, args.fresh, res)
        print(f"round {r + 1}/{args.rounds} ({''.join(order)}): {time.perf_counter() - started:.1f} s", flush=True)
        order = order[1:] + order[:1]
    report(res, ["sequential", inflight, "first pair"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=500, help="sequential pairs per design per round")
    parser.add_argument("--concurrent-pairs", type=int, default=2000, help="pairs per design per round, in flight")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--fresh", type=int, default=20, help="fresh tenants per design per round (first pair)")
    args = parser.parse_args()
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    from agent_patterns_dev import embedded
    from agent_patterns_dev.environment import export_backends

    data_dir = Path(tempfile.mkdtemp(prefix="budget-gate-bench-"))
    try:
        for var in ("REDIS_URL", "DATABASE_URL"):  # always the embedded servers, never a configured one
            os.environ.pop(var, None)
        export_backends(data_dir)
        asyncio.run(run(args))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        embedded.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
