"""SSE fan-out: publish-to-receive latency and delivery rate to N concurrent clients.

One uvicorn process serves the same run two ways: our `build_sse_response` and sse-starlette's
`EventSourceResponse`, both over the same per-run feed. For N = 1, 100, 1000 clients it
publishes events at a steady rate and measures, per delivered event, the time from XADD to the
client reading it (CLOCK_MONOTONIC is shared by processes), plus the server's peak RSS.

    uv run python bench/sse.py [--clients 1 100 1000] [--events 200] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
DATA = re.compile(rb"data: (\{.*?\})\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def client(port: int, path: str, latencies: list[float], ready: asyncio.Event, counter: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    buffer = b""
    first = True
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            now = time.monotonic()
            buffer = (buffer + chunk).replace(b"\r\n", b"\n")  # sse-starlette ends lines with CRLF
            *complete, buffer = buffer.split(b"\n\n")
            for block in complete:
                match = DATA.search(block + b"\n")
                if not match:
                    continue
                message = json.loads(match.group(1))
                if first:
                    first = False
                    counter[0] += 1
                    if counter[0] == counter[1]:
                        ready.set()
                payload = message.get("payload") or {}
                if "t" in payload:
                    latencies.append((now - payload["t"]) * 1000)
                if message.get("type") in ("complete", "error"):
                    return
    finally:
        writer.close()


async def run_case(
    port: int, variant: str, n: int, count: int, rate: float, server: psutil.Process
) -> dict[str, float]:
    from agent_patterns.runs import events

    run_id = await events.create_run("bench", "bench")
    latencies: list[float] = []
    ready = asyncio.Event()
    counter = [0, n]
    tasks = [asyncio.create_task(client(port, f"/{variant}/{run_id}", latencies, ready, counter)) for _ in range(n)]
    await asyncio.wait_for(ready.wait(), 120)  # every client has its first event (the replayed `queued`)
    peak = server.memory_info().rss
    started = time.monotonic()
    for i in range(count):
        await events.publish(run_id, "running", {"i": i, "t": time.monotonic()})
        peak = max(peak, server.memory_info().rss)
        await asyncio.sleep(1 / rate)
    await events.publish(run_id, "complete", {"t": time.monotonic()})
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    elapsed = time.monotonic() - started
    peak = max(peak, server.memory_info().rss)
    latencies.sort()
    expected = n * (count + 1)
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[int(0.99 * (len(latencies) - 1))],
        "delivered": len(latencies) / expected,
        "events_per_s": len(latencies) / elapsed,
        "rss_mb": peak / 2**20,
    }


async def main_async(args: argparse.Namespace) -> None:
    os.environ["AUTH_MODE"] = "local"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'bench'}:{ROOT / 'layers' / 'patterns'}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "sse_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--limit-concurrency",
            "5000",
            "--backlog",
            "4096",
        ],
        env=env,
        cwd=ROOT / "bench",
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        server = psutil.Process(proc.pid)
        print(
            f"{'clients':>7} {'variant':>14} {'p50 ms':>8} {'p99 ms':>8} {'events/s':>10} {'delivered':>9} {'peak RSS MB':>11}"
        )
        for n in args.clients:
            for variant in ("ours", "sse-starlette"):
                r = await run_case(port, variant, n, args.events, args.rate, server)
                print(
                    f"{n:7d} {variant:>14} {r['p50']:8.2f} {r['p99']:8.2f} {r['events_per_s']:10.0f} "
                    f"{r['delivered']:9.1%} {r['rss_mb']:11.1f}",
                    flush=True,
                )
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 100, 1000])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="events published per second")
    args = parser.parse_args()
    from agent_patterns_dev import embedded
    from agent_patterns_dev.environment import export_auth_secret

    data_dir = ROOT / ".agent-patterns" / "bench"
    try:
        if not os.environ.get("REDIS_URL"):
            os.environ["REDIS_URL"] = embedded.redis_url(data_dir)
        export_auth_secret(data_dir)
        asyncio.run(main_async(args))
    finally:
        embedded.stop()


if __name__ == "__main__":
    main()
