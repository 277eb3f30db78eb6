"""Crawl throughput: our run_crawl vs Crawlee's PlaywrightCrawler vs a sequential BFS.

A generated 300-page site (bench/crawl_site.py) is served twice, with no delay and with 200 ms
of latency per response. Each crawler crawls 100 pages from `/`, same-origin, with the same
concurrency, in its own process, on each browser: the system's full Chromium (new headless
mode) and Debian's `chromium-headless-shell` (the old headless implementation, what Playwright
ships for headless runs and the Lambda image uses). Every crawler finds its browser through
`chromium_executable()`, i.e. the CHROMIUM_PATH setting, which the bench sets in each child's
environment (and checks by process name that this browser ran). Ratios compare crawlers on the
same browser. The parent samples the memory of each child and its Chromium processes (PSS:
shared pages counted once) and their CPU (user+system per page, without the interpreter's start).
With `--repeat N` each crawler runs N times per site and browser, interleaved with the order
rotated, and the run with the median pages/s is shown.

    uv run --with 'crawlee[playwright]' python bench/crawl.py [--concurrency 8] [--pages 100] [--delays 0 200]
        [--repeat 1] [--browser chromium=/usr/bin/chromium --browser headless-shell=/usr/lib/chromium/chromium-headless-shell]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent_patterns.crawl.browser import BASE_ARGS

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = list(BASE_ARGS)
HEADLESS_SHELL = "/usr/lib/chromium/chromium-headless-shell"  # Debian's package; /usr/bin's is a sh wrapper


async def crawl_ours(url: str, pages: int, concurrency: int) -> int:
    from urllib.parse import urlsplit

    from agent_patterns.crawl import CrawlConfig, run_crawl

    host = urlsplit(url).netloc
    result = await run_crawl(
        CrawlConfig(url=url, max_pages=pages, concurrency=concurrency, allowed_private_hosts=(host,))
    )
    assert result.error_message is None, result.error_message
    return result.pages_crawled


async def crawl_crawlee(url: str, pages: int, concurrency: int) -> int:
    # Crawlee keeps its request queue in ./storage unless told otherwise: keep the checkout clean
    # (and /tmp: the folder goes when the crawl ends).
    storage = None
    if "CRAWLEE_STORAGE_DIR" not in os.environ:
        storage = os.environ["CRAWLEE_STORAGE_DIR"] = tempfile.mkdtemp(prefix="crawlee-bench-")
    try:
        return await _crawlee_run(url, pages, concurrency)
    finally:
        if storage:
            shutil.rmtree(storage, ignore_errors=True)


async def _crawlee_run(url: str, pages: int, concurrency: int) -> int:
    from crawlee import ConcurrencySettings  # type: ignore[import-not-found]
    from crawlee.crawlers import PlaywrightCrawler, PlaywrightCrawlingContext  # type: ignore[import-not-found]

    from agent_patterns.crawl.browser import chromium_executable

    crawled = 0
    crawler = PlaywrightCrawler(
        max_requests_per_crawl=pages,
        concurrency_settings=ConcurrencySettings(
            min_concurrency=concurrency, desired_concurrency=concurrency, max_concurrency=concurrency
        ),
        headless=True,
        browser_launch_options={"executable_path": chromium_executable(), "args": CHROMIUM_ARGS},
    )

    @crawler.router.default_handler  # type: ignore[untyped-decorator]
    async def handler(context: PlaywrightCrawlingContext) -> None:
        nonlocal crawled
        crawled += 1
        await context.page.evaluate("() => document.forms.length")
        await context.enqueue_links(strategy="same-origin")

    await crawler.run([url])
    return crawled


async def crawl_sequential(url: str, pages: int, concurrency: int) -> int:
    """The seed design: one page, one URL at a time, breadth-first."""
    from urllib.parse import urldefrag, urlsplit

    from playwright.async_api import async_playwright

    from agent_patterns.crawl.browser import chromium_executable

    origin = urlsplit(url)[:2]
    queue, seen, crawled = [url], {url}, 0
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            while queue and crawled < pages:
                current = queue.pop(0)
                await page.goto(current, timeout=30_000)
                crawled += 1
                links = await page.evaluate("() => Array.from(document.querySelectorAll('a[href]'), a => a.href)")
                await page.evaluate("() => document.forms.length")
                for link in links:
                    link = urldefrag(link)[0]
                    if urlsplit(link)[:2] == origin and link not in seen:
                        seen.add(link)
                        queue.append(link)
        finally:
            await browser.close()
    return crawled


CRAWLERS = {"ours": crawl_ours, "crawlee": crawl_crawlee, "sequential": crawl_sequential}


def child(name: str, url: str, pages: int, concurrency: int) -> None:
    cpu_before, started = time.process_time(), time.perf_counter()  # the interpreter's start and imports
    crawled = asyncio.run(CRAWLERS[name](url, pages, concurrency))
    print(json.dumps({"pages": crawled, "seconds": time.perf_counter() - started, "cpu_before": cpu_before}))


def measure(name: str, url: str, pages: int, concurrency: int, browser: str) -> dict[str, float]:
    import psutil

    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--child",
            name,
            "--url",
            url,
            "--pages",
            str(pages),
            "--concurrency",
            str(concurrency),
        ],
        stdout=subprocess.PIPE,
        text=True,
        # CHROMIUM_PATH: the crawl setting every crawler here reads through chromium_executable().
        env={**os.environ, "PYTHONPATH": str(ROOT / "layers" / "patterns"), "CHROMIUM_PATH": browser},
    )
    samples: list[float] = []
    binaries: set[str] = set()  # what actually ran: the browser asked for, not a fallback
    cpu: dict[int, float] = {}  # pid -> user+system seconds, as last seen (the tree's processes come and go)

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                binaries.update(p.name() for p in tree[1:])
                for p in tree:
                    with contextlib.suppress(psutil.Error):
                        t = p.cpu_times()
                        cpu[p.pid] = t.user + t.system
                # PSS: Chromium's processes share most of their pages; RSS would count them N times.
                samples.append(sum(p.memory_full_info().pss for p in tree if p.is_running()) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:  # a crawl interrupted or timed out leaves no Chromium behind
            stop_tree(proc.pid)
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} on {browser} failed (exit {proc.returncode})")
    expected = Path(os.path.realpath(browser)).name
    if not {expected, expected[:15]} & binaries:  # a process name may be cut at 15 characters
        raise RuntimeError(f"{name} did not run {browser}: saw {sorted(binaries)}")
    result = json.loads(out.strip().splitlines()[-1])
    half = len(samples) // 2
    return {
        **result,
        "pages_per_s": result["pages"] / result["seconds"],
        # CPU of the crawler's process and its browser, per page: what the 2 shared cores pay
        "cpu_ms_per_page": (sum(cpu.values()) - result["cpu_before"]) * 1000 / result["pages"],
        "peak_mb": max(samples),
        "first_half_peak_mb": max(samples[:half] or [0]),
        "second_half_peak_mb": max(samples[half:] or [0]),
    }


def measure_repeated(args: argparse.Namespace, url: str, browser: str) -> dict[str, dict[str, Any]]:
    """Each crawler `args.repeat` times, interleaved (the order rotated each round, so a shift in the
    machine's load falls on all of them); per crawler the run with the median pages/s."""
    import statistics

    runs: dict[str, list[dict[str, float]]] = {name: [] for name in args.crawlers}
    for round_ in range(args.repeat):
        shift = round_ % len(args.crawlers)
        for name in args.crawlers[shift:] + args.crawlers[:shift]:
            runs[name].append(measure(name, url, args.pages, args.concurrency, browser))
    out: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        rates = sorted(r["pages_per_s"] for r in rs)
        median = statistics.median_low(rates)
        chosen = next(r for r in rs if r["pages_per_s"] == median)
        out[name] = {**chosen, "all_pages_per_s": "/".join(f"{r['pages_per_s']:.1f}" for r in rs)}
    return out


def stop_tree(pid: int) -> None:
    """Terminate a process this bench started and every process under it (then kill)."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(tree, timeout=5)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


def browser_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.strip() or out.stderr.strip()[:80]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def serve(delay_ms: int) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "crawl_site:app", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT / "bench",
        env={**os.environ, "BENCH_DELAY_MS": str(delay_ms)},
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child")
    parser.add_argument("--url")
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--crawlers", nargs="*", default=list(CRAWLERS))
    parser.add_argument("--delays", nargs="*", type=int, default=[0, 200], help="ms of latency per response")
    parser.add_argument(
        "--repeat", type=int, default=1, help="crawls per crawler and browser, interleaved; the median is shown"
    )
    parser.add_argument(
        "--browser",
        action="append",
        metavar="NAME=PATH",
        help="a browser binary to run every crawler on (repeatable; default: chromium and headless-shell)",
    )
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.pages, args.concurrency)
        return
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)  # `timeout`, kill: unwind, stop the site and crawls
    browsers = dict(b.split("=", 1) for b in args.browser) if args.browser else default_browsers()
    for name, path in browsers.items():
        print(f"browser {name}: {path} ({browser_version(path)})")
    with contextlib.suppress(ImportError):
        from importlib.metadata import version

        print(f"crawlee {version('crawlee')}, playwright {version('playwright')}")
    print(f"load average {load()} at start", flush=True)
    print(
        f"{'site':>6} {'browser':>14} {'crawler':>11} {'pages':>6} {'pages/s':>8} {'vs crawlee':>10} "
        f"{'vs sequential':>13} {'CPU ms/page':>11} {'peak MB':>8} {'peak 1st/2nd half MB':>21}",
        flush=True,
    )
    table: dict[tuple[int, str, str], dict[str, Any]] = {}
    for delay in args.delays:
        server, url = serve(delay)
        try:
            for browser, path in browsers.items():
                results = measure_repeated(args, url, path)
                for name, r in results.items():
                    table[delay, browser, name] = r
                    vs_c, vs_s = (
                        r["pages_per_s"] / results[other]["pages_per_s"] if other in results else float("nan")
                        for other in ("crawlee", "sequential")
                    )
                    print(
                        f"{delay:>4}ms {browser:>14} {name:>11} {r['pages']:>6} {r['pages_per_s']:>8.1f} {vs_c:>9.2f}x "
                        f"{vs_s:>12.2f}x {r['cpu_ms_per_page']:>11.0f} {r['peak_mb']:>8.0f} "
                        f"{r['first_half_peak_mb']:>10.0f}/{r['second_half_peak_mb']:<10.0f}"
                        + (f" runs {r['all_pages_per_s']}" if args.repeat > 1 else ""),
                        flush=True,
                    )
        finally:
            if server.poll() is None:
                stop_tree(server.pid)
    names = list(browsers)
    if len(names) == 2:
        full, shell = names
        for delay in args.delays:
            parts = [
                f"{crawler} {table[delay, shell, crawler]['pages_per_s'] / table[delay, full, crawler]['pages_per_s']:.2f}x"
                for crawler in args.crawlers
                if (delay, full, crawler) in table and (delay, shell, crawler) in table
            ]
            print(f"{shell} / {full}, {delay} ms site: " + ", ".join(parts))
    for browser in names:
        for delay in args.delays:
            if (delay, browser, "ours") in table and (delay, browser, "crawlee") in table:
                ratio = table[delay, browser, "ours"]["pages_per_s"] / table[delay, browser, "crawlee"]["pages_per_s"]
                verdict = "met" if ratio >= 3 else "NOT met"
                print(f"goal >= 3x Crawlee's pages/s, {delay} ms site, {browser}: {ratio:.2f}x, {verdict}")
    print(f"load average {load()} at the end")


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def default_browsers() -> dict[str, str]:
    """The system's full Chromium (CHROMIUM_PATH if set, else `chromium` on PATH) and the headless shell."""
    found: dict[str, str] = {}
    full = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    if full:
        found["chromium"] = full
    if Path(HEADLESS_SHELL).is_file():
        found["headless-shell"] = HEADLESS_SHELL
    return found


if __name__ == "__main__":
    main()
