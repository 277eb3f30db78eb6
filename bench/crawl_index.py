"""Crawl to index: pages indexed per second, a crawl with `index: true` against the same crawl without.

The product path end to end, in one process as the crawl worker runs on Lambda: `start_run` with a
`CrawlRequest` (as `POST /v1/crawls` does), then the crawl worker's Lambda handler
(`functions/crawl/crawl_worker.py`) with the SQS event of the job message. With `index: true`
each page is crawled, turned into Markdown, chunked, embedded and stored in pgvector as it
arrives (`crawl/indexing.py`), and the run completes once every page is in the index. The site
is bench/crawl_site.py (300 generated pages, ~4 KB of text each) under uvicorn; embeddings come
from the tests' OpenAI stub (`tests/llm_stub.py`, deterministic 1536-dimension vectors; here in
the base64 wire format the SDK asks for, as OpenAI answers: `--embeddings float` for the tests'
JSON floats) in its own uvicorn process; Redis and Postgres (pgvector) are the embedded ones, started by the bench
and stopped on exit, on Ctrl-C and on SIGTERM, like the site, the stub and any browser left.

Each run gets a fresh tenant, so every page is embedded (no cache hit, no "unchanged" page). One
warm-up pair (imports, first connections), then `--rounds` pairs with the order alternated.
Time is the worker's handler, from the SQS event to the run's completion (browser start, robots
and sitemap probes, crawl, indexing drain, pages stored). At the end the last indexed run's
tenant must hold `--pages` documents.

    uv run python bench/crawl_index.py [--pages 100] [--rounds 3] [--concurrency 8] [--delay-ms 0]
        [--chromium /usr/lib/chromium/chromium-headless-shell] [--embeddings base64|float]
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
from pathlib import Path
from typing import Any

from crawl import stop_tree  # bench/crawl.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
HEADLESS_SHELL = "/usr/lib/chromium/chromium-headless-shell"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def serve(app: str, env: dict[str, str], *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """`app` (module:attribute) under uvicorn in its own process, from bench/."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, *extra, "--port", str(port), "--log-level", "warning"],
        cwd=ROOT / "bench",
        env={**os.environ, **env},
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{app} did not start (exit {proc.returncode})") from None
            time.sleep(0.1)
    raise RuntimeError(f"{app} did not start listening")


def embeddings_app() -> Any:
    """The tests' OpenAI stub (`uvicorn --factory crawl_index:embeddings_app`), answering
    embeddings in the wire format asked for. The `openai` SDK asks for `encoding_format: base64`
    (one string per vector, decoded at once) and the tests' stub always answers JSON floats,
    which the SDK then walks float by float (~25 ms of CPU per page of 3 chunks here). By default
    this stub answers as OpenAI does; `BENCH_EMBEDDINGS_WIRE=float` makes it answer as the tests' stub."""
    import base64
    import json
    import struct

    sys.path.insert(0, str(ROOT))
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from tests.llm_stub import StubProviders

    floats = os.environ.get("BENCH_EMBEDDINGS_WIRE") == "float"

    class Stub(StubProviders):
        async def embeddings(self, request: Request) -> Response:
            body = json.loads(await request.body())
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            dims = body.get("dimensions") or 1536
            packed = not floats and body.get("encoding_format") == "base64"
            data = []
            for i, text in enumerate(inputs):
                vector = self.vector_for(text, dims)
                value = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if packed else vector
                data.append({"object": "embedding", "index": i, "embedding": value})
            usage = {"prompt_tokens": 1, "total_tokens": 1}
            return JSONResponse({"object": "list", "data": data, "model": body["model"], "usage": usage})

    return Stub().app()


def cpu_s(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


_keep: set[int] = set()  # processes an interruption leaves to the final cleanup (embedded servers, stub)


def _interrupted(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: the crawl runs in a worker thread that asyncio would wait for at exit,
    so first stop what it crawls with (the site, the Playwright driver and Chromium): the step
    then ends at once, and the cleanup in `main` stops the rest."""
    from agent_patterns_dev import embedded

    _stop_children(_keep | embedded.started_pids())
    raise KeyboardInterrupt


async def one_run(worker: Any, url: str, pages: int, index: bool, sent: list[dict[str, Any]]) -> dict[str, Any]:
    """One crawl run as the product runs it; returns what it did and what it cost."""
    from agent_patterns.crawl.jobs import CrawlRequest, start_run
    from agent_patterns_dev.gateway import LocalLambdaContext, sqs_event

    tenant = "bench" + uuid.uuid4().hex[:10]
    request = CrawlRequest.model_validate({"url": url, "max_pages": pages, "index": index})
    run_id = await start_run(tenant, request)
    message = sent.pop()
    assert message["run_id"] == run_id, message
    cpu0, t0 = time.process_time(), time.perf_counter()
    response = await asyncio.to_thread(worker.handler, sqs_event(message), LocalLambdaContext("crawl-worker", 900))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert response == {"batchItemFailures": []}, response
    from agent_patterns.runs.records import get_run

    record = await get_run(tenant, run_id)
    assert record is not None and record.status == "complete", record
    result = record.result or {}
    added = int((result.get("index") or {}).get("added", 0))
    return {
        "tenant": tenant,
        "index": index,
        "pages": int(result.get("pages_crawled", 0)),
        "indexed": added,
        "failed": int((result.get("index") or {}).get("failed", 0)),
        "seconds": seconds,
        "cpu_s": cpu,
    }


async def index_holds(tenant: str) -> tuple[int, int, int, float, float]:
    """Documents, chunks and embeddings the tenant's index holds, read from Postgres, and the
    smallest and largest norm of its vectors (the stub's are unit vectors: 1 if decoded right)."""
    from psycopg import sql

    from agent_patterns.backends import connection
    from agent_patterns.tenancy import tenant as tenant_of

    schema = sql.Identifier(tenant_of(tenant).schema)
    counts = []
    async with connection() as db:
        for table in ("documents", "chunks", "embeddings"):
            cur = await db.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(schema, sql.Identifier(table)))
            row = await cur.fetchone()
            counts.append(int(row[0]) if row else 0)
        query = sql.SQL("SELECT min(n), max(n) FROM (SELECT vector_norm(embedding::vector) AS n FROM {}.embeddings) e")
        cur = await db.execute(query.format(schema))
        norms = await cur.fetchone()
    low, high = (float(norms[0]), float(norms[1])) if norms and norms[0] is not None else (0.0, 0.0)
    return counts[0], counts[1], counts[2], low, high


async def bench(args: argparse.Namespace, url: str, stub_pid: int) -> None:
    from agent_patterns.backends.sqs import set_local_consumer
    from agent_patterns_dev.gateway import load_function

    sent: list[dict[str, Any]] = []
    set_local_consumer(sent.append)
    worker = load_function("crawl", "crawl_worker")
    print("warm-up (not counted) ...", flush=True)
    for index in (True, False):
        await one_run(worker, url, min(10, args.pages), index, sent)

    print(
        f"{'round':>5} {'variant':>10} {'pages':>6} {'indexed':>8} {'failed':>7} {'seconds':>8} {'pages/s':>8} "
        f"{'worker CPU s':>12} {'stub CPU s':>10}  load",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        for index in order:
            stub0 = cpu_s(stub_pid)
            run = await one_run(worker, url, args.pages, index, sent)
            run["stub_cpu_s"] = cpu_s(stub_pid) - stub0
            run["round"] = r + 1
            runs.append(run)
            done = run["indexed"] if index else run["pages"]
            print(
                f"{r + 1:>5} {'index' if index else 'crawl':>10} {run['pages']:>6} {run['indexed']:>8} "
                f"{run['failed']:>7} {run['seconds']:>8.2f} {done / run['seconds']:>8.2f} {run['cpu_s']:>12.2f} "
                f"{run['stub_cpu_s']:>10.2f}  {load()}",
                flush=True,
            )

    indexed = [x for x in runs if x["index"]]
    plain = [x for x in runs if not x["index"]]
    idx_rate = statistics.median(x["indexed"] / x["seconds"] for x in indexed)
    crawl_rate = statistics.median(x["pages"] / x["seconds"] for x in plain)
    pairs = [a["seconds"] / b["seconds"] for a in indexed for b in plain if a["round"] == b["round"]]
    print(f"\nmedian pages indexed/s (crawl + index): {idx_rate:.2f}")
    print(f"median pages crawled/s (crawl alone):   {crawl_rate:.2f}")
    print(f"ratio indexed/s over crawled/s:         {idx_rate / crawl_rate:.2f}x")
    print(f"time with index / without, per round:   {', '.join(f'{p:.2f}x' for p in pairs)}")
    cpu_idx = statistics.median(x["cpu_s"] for x in indexed)
    cpu_plain = statistics.median(x["cpu_s"] for x in plain)
    print(
        f"worker process CPU per run (median):    {cpu_idx:.2f} s with index, {cpu_plain:.2f} s without "
        f"({(cpu_idx - cpu_plain) / args.pages * 1000:+.1f} ms per page); stub (embeddings) "
        f"{statistics.median(x['stub_cpu_s'] for x in indexed):.2f} s"
    )
    last = indexed[-1]
    documents, chunks, embeddings, low, high = await index_holds(last["tenant"])
    right = documents == args.pages and embeddings == chunks and abs(low - 1) < 1e-3 and abs(high - 1) < 1e-3
    print(
        f"index of the last indexed run: {documents} documents, {chunks} chunks, {embeddings} embeddings, "
        f"vector norms {low:.4f}-{high:.4f} (expected {args.pages} documents of unit vectors: "
        f"{'ok' if right else 'WRONG'})"
    )
    set_local_consumer(None)
    if not right:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="CRAWL_CONCURRENCY (tabs)")
    parser.add_argument("--delay-ms", type=int, default=0, help="latency of each page of the site")
    parser.add_argument(
        "--embeddings",
        choices=("base64", "float"),
        default="base64",
        help="the stub's embeddings wire format: base64 (as the SDK asks, what OpenAI sends) or JSON floats",
    )
    parser.add_argument(
        "--max-rps",
        default="100",
        help="CRAWL_ORIGIN_MAX_RPS, the politeness limit per origin where the code has one (its default, 5,"
        " would cap both variants and hide what indexing costs)",
    )
    parser.add_argument(
        "--chromium",
        default=HEADLESS_SHELL if Path(HEADLESS_SHELL).is_file() else shutil.which("chromium"),
        help="CHROMIUM_PATH for the crawl (default: Debian's chromium-headless-shell, else chromium)",
    )
    args = parser.parse_args()
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, `timeout`, kill: stop everything below
        signal.signal(signum, _interrupted)

    data = Path(tempfile.mkdtemp(prefix="bench-crawl-index-"))
    os.environ.update(
        {
            "AGENT_PATTERNS_DATA_DIR": str(data / "data"),
            "AUTH_MODE": "local",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "OPENAI_API_KEY": "sk-bench",
            "CRAWL_CONCURRENCY": str(args.concurrency),
            "CRAWL_ORIGIN_MAX_RPS": str(args.max_rps),
            "CHROMIUM_PATH": args.chromium or "",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT / "layers" / "patterns"), os.environ.get("PYTHONPATH")])
            ),
        }
    )
    os.environ.pop("CRAWL_QUEUE_URL", None)
    os.environ.pop("AWS_LAMBDA_FUNCTION_NAME", None)
    servers: list[subprocess.Popen[bytes]] = []
    from agent_patterns_dev import embedded

    try:
        site, site_port = serve("crawl_site:app", {"BENCH_DELAY_MS": str(args.delay_ms)})
        servers.append(site)
        stub, stub_port = serve("crawl_index:embeddings_app", {"BENCH_EMBEDDINGS_WIRE": args.embeddings}, "--factory")
        servers.append(stub)
        _keep.add(stub.pid)  # pages already offered still index while an interrupted step ends
        from agent_patterns.config import reset_settings
        from agent_patterns_dev.environment import export_backends

        os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{stub_port}/v1"
        os.environ["CRAWL_ALLOWED_PRIVATE_HOSTS_UNSAFE"] = f"127.0.0.1:{site_port}"
        where = export_backends(data / "data")
        reset_settings()
        print(
            f"browser {args.chromium}; concurrency {args.concurrency}; site delay {args.delay_ms} ms;"
            f" CRAWL_ORIGIN_MAX_RPS {args.max_rps}; embeddings as {args.embeddings}; {where}"
        )
        print(f"load average {load()} at start", flush=True)
        asyncio.run(bench(args, f"http://127.0.0.1:{site_port}/", stub.pid))
        print(f"load average {load()} at the end")
    finally:
        for server in servers:
            if server.poll() is None:  # (a pid that ended may be someone else's by now)
                stop_tree(server.pid)
        _stop_children(embedded.started_pids())
        embedded.stop()
        shutil.rmtree(data, ignore_errors=True)


def _stop_children(keep: set[int]) -> None:
    """Every process this one still has running under it but `keep` (an interrupted crawl's
    Playwright driver and Chromium, the servers); the embedded ones are stopped by `embedded.stop()`."""
    import psutil

    for child in psutil.Process().children():
        if child.pid not in keep:
            stop_tree(child.pid)


if __name__ == "__main__":
    main()
