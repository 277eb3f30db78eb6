"""Crawl throughput: our run_crawl vs Crawlee's PlaywrightCrawler vs a sequential BFS.

A generated 300-page site (bench/crawl_site.py) is served twice, with no delay and with 200 ms
of latency per response. Each crawler crawls 100 pages from `/`, same-origin, with the same
system Chromium and the same concurrency, in its own process; the parent samples the RSS of
that process and its Chromium children (PSS: shared pages counted once).

    uv run --with 'crawlee[playwright]' python bench/crawl.py [--concurrency 8] [--pages 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from agent_patterns.crawl.browser import BASE_ARGS

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = list(BASE_ARGS)


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
    from crawlee import ConcurrencySettings  # type: ignore[import-not-found]
    from crawlee.crawlers import PlaywrightCrawler, PlaywrightCrawlingContext  # type: ignore[import-not-found]

    from agent_patterns.crawl.browser import chromium_executable

    # Crawlee keeps its request queue in ./storage unless told otherwise: keep the checkout clean.
    os.environ.setdefault("CRAWLEE_STORAGE_DIR", str(Path(tempfile.mkdtemp(prefix="crawlee-bench-"))))
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
    started = time.perf_counter()
    crawled = asyncio.run(CRAWLERS[name](url, pages, concurrency))
    print(json.dumps({"pages": crawled, "seconds": time.perf_counter() - started}))


def measure(name: str, url: str, pages: int, concurrency: int) -> dict[str, float]:
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
        env={**os.environ, "PYTHONPATH": str(ROOT / "layers" / "patterns")},
    )
    samples: list[float] = []

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                # PSS: Chromium's processes share most of their pages; RSS would count them N times.
                samples.append(sum(p.memory_full_info().pss for p in tree if p.is_running()) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate(timeout=900)
    sampler.join()
    result = json.loads(out.strip().splitlines()[-1])
    half = len(samples) // 2
    return {
        **result,
        "pages_per_s": result["pages"] / result["seconds"],
        "peak_mb": max(samples),
        "first_half_peak_mb": max(samples[:half] or [0]),
        "second_half_peak_mb": max(samples[half:] or [0]),
    }


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
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.pages, args.concurrency)
        return
    print(
        f"{'site':>8} {'crawler':>11} {'pages':>6} {'pages/s':>8} {'vs crawlee':>10} {'vs sequential':>13} "
        f"{'peak MB':>8} {'peak 1st/2nd half MB':>21}"
    )
    for delay in (0, 200):
        server, url = serve(delay)
        try:
            results = {name: measure(name, url, args.pages, args.concurrency) for name in args.crawlers}
        finally:
            server.terminate()
        for name, r in results.items():
            vs_c = r["pages_per_s"] / results["crawlee"]["pages_per_s"] if "crawlee" in results else float("nan")
            vs_s = r["pages_per_s"] / results["sequential"]["pages_per_s"] if "sequential" in results else float("nan")
            print(
                f"{delay:>6}ms {name:>11} {r['pages']:>6} {r['pages_per_s']:>8.1f} {vs_c:>9.2f}x {vs_s:>12.2f}x "
                f"{r['peak_mb']:>8.0f} {r['first_half_peak_mb']:>10.0f}/{r['second_half_peak_mb']:<10.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
