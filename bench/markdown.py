"""Main content as Markdown: which library, measured on real-world page shapes.

Each page of tests/pages (a docs page with a sidebar, a blog post with a cookie banner and
comments, a script-rendered app, a data table, nested lists, a German news page of bare divs)
is rendered in the system Chromium and taken from the live DOM the way the crawler takes it
(crawl/source.js); every candidate then turns the same HTML into Markdown. Fidelity is the share
of the checks in tests/pages/cases.py that pass (must-haves present, must-nots absent); time is
the median of `--rounds` conversions per page, and of one large page (the docs article 40
times, 67 KB). Candidates not installed are listed as such; the project depends only on the
libraries it uses (readability-lxml, html-to-markdown), so install the others for the run:

    uv run --with trafilatura --with markdownify --with html2text python bench/markdown.py [--rounds 20] [--verbose]

crawl4ai's Markdown (its DefaultMarkdownGenerator, raw and "fit" with its PruningContentFilter,
on our HTML and after its own cleaning step) is measured the same way, only its HTML-to-Markdown
code: its browser is never started. It brings ~100 packages; install it for the run too:

    uv run --with trafilatura --with markdownify --with html2text --with crawl4ai python bench/markdown.py --rounds 20

(`--only-prefix crawl4ai --only-prefix ours`: only those rows.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pages.cases import CASES, PAGES, Case, score  # noqa: E402

Convert = Callable[[dict[str, Any], str], str]  # (what crawl/source.js returned, the page's URL)


def trafilatura_md(html: str, url: str, *, favor_recall: bool = False) -> str:
    import trafilatura  # type: ignore[import-not-found, unused-ignore]

    return (
        trafilatura.extract(
            html,
            url=url,
            output_format="markdown",
            include_formatting=True,
            include_links=True,
            include_tables=True,
            include_images=False,
            include_comments=False,
            favor_recall=favor_recall,
        )
        or ""
    )


def trafilatura_recall_md(html: str, url: str) -> str:
    return trafilatura_md(html, url, favor_recall=True)


def _readability(html: str) -> str:
    from readability import Document  # type: ignore[import-not-found, unused-ignore]

    return str(Document(html).summary(html_partial=True))


def readability_markdownify_md(html: str, url: str) -> str:
    from markdownify import markdownify  # type: ignore[import-not-found, unused-ignore]

    return str(markdownify(_readability(html), heading_style="ATX", bullets="-"))


def readability_html2text_md(html: str, url: str) -> str:
    return html2text_md(_readability(html), url)


def readability_html_to_markdown_md(html: str, url: str) -> str:
    return html_to_markdown_md(_readability(html), url, preprocess=False)


def markdownify_md(html: str, url: str) -> str:
    from markdownify import markdownify

    return str(markdownify(html, heading_style="ATX", bullets="-", strip=["head"]))


def html2text_md(html: str, url: str) -> str:
    import html2text  # type: ignore[import-not-found, unused-ignore]

    h = html2text.HTML2Text()
    h.body_width = 0
    h.ignore_images = True
    h.mark_code = False
    return str(h.handle(html))


def html_to_markdown_md(html: str, url: str, *, preprocess: bool = True) -> str:
    from html_to_markdown import ConversionOptions, PreprocessingOptions, convert  # type: ignore[import-not-found, unused-ignore]

    options = ConversionOptions(
        skip_images=True,
        extract_metadata=False,
        preprocessing=PreprocessingOptions(preset="aggressive", remove_navigation=True, remove_forms=True)
        if preprocess
        else PreprocessingOptions(enabled=False),
    )
    return str(convert(html, options).content)


def ours(source: dict[str, Any], url: str) -> str:
    """The crawler's pipeline: crawl/markdown.py (readability-lxml, html-to-markdown, the heading
    rule, the cap)."""
    from agent_patterns.crawl.markdown import page_text_from
    from agent_patterns.crawl.types import PageLimits

    return page_text_from(source, PageLimits().markdown_bytes).markdown


def _crawl4ai_filter(kind: str) -> Any:
    import warnings

    import crawl4ai  # type: ignore[import-not-found, unused-ignore]

    if kind == "pruning":
        with warnings.catch_warnings():  # deprecated in 0.9 for the lxml version (same output, faster)
            warnings.simplefilter("ignore", DeprecationWarning)
            return crawl4ai.PruningContentFilter()
    if kind == "pruning-lxml":
        return crawl4ai.PruningContentFilterLXML()
    return None


def crawl4ai_md(*, content_filter: str | None = None, cleaned: bool = False) -> Convert:
    """crawl4ai's DefaultMarkdownGenerator as `arun` calls it (citations on): its raw Markdown, or
    with a content filter its "fit" Markdown. `cleaned`: first its default scraping strategy
    (LXMLWebScrapingStrategy, what makes `cleaned_html`, the generator's default source), else
    straight on our HTML. Built on first use, so a missing crawl4ai reads as not installed."""
    state: dict[str, Any] = {}

    def convert(source: dict[str, Any], url: str) -> str:
        if not state:
            from crawl4ai import CrawlerRunConfig, DefaultMarkdownGenerator  # type: ignore[import-not-found, unused-ignore]

            state["generator"] = DefaultMarkdownGenerator(content_filter=_crawl4ai_filter(content_filter or ""))
            config = CrawlerRunConfig()
            state["scraper"] = config.scraping_strategy
            state["params"] = {k: v for k, v in config.__dict__.items() if k != "url"}
        html = source["html"]
        if cleaned:
            html = state["scraper"].scrap(url, html, **state["params"]).cleaned_html
        result = state["generator"].generate_markdown(input_html=html, base_url=url)
        return str(result.fit_markdown if content_filter else result.raw_markdown)

    return convert


def html_only(convert: Callable[[str, str], str]) -> Convert:
    return lambda source, url: convert(source["html"], url)


CANDIDATES: dict[str, Convert] = {
    "trafilatura": html_only(trafilatura_md),
    "trafilatura (favor_recall)": html_only(trafilatura_recall_md),
    "readability-lxml + markdownify": html_only(readability_markdownify_md),
    "readability-lxml + html2text": html_only(readability_html2text_md),
    "readability-lxml + html-to-markdown": html_only(readability_html_to_markdown_md),
    "html-to-markdown (aggressive)": html_only(html_to_markdown_md),
    "markdownify (whole page)": html_only(markdownify_md),
    "html2text (whole page)": html_only(html2text_md),
    "crawl4ai generator": crawl4ai_md(),
    "crawl4ai fit (Pruning)": crawl4ai_md(content_filter="pruning"),
    "crawl4ai fit (PruningLXML)": crawl4ai_md(content_filter="pruning-lxml"),
    "crawl4ai cleaned + generator": crawl4ai_md(cleaned=True),
    "crawl4ai cleaned + fit (Pruning)": crawl4ai_md(content_filter="pruning", cleaned=True),
    "ours: crawl/markdown.py": ours,
}


def large_page() -> bytes:
    """The docs page with its article 40 times over: the size of a long real page."""
    html = (PAGES / "docs.html").read_text()
    start, end = html.index("<article"), html.index("</article>") + len("</article>")
    return (html[:start] + html[start:end] * 40 + html[end:]).encode()


class Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(PAGES), **kwargs)

    def do_GET(self) -> None:
        if self.path == "/large.html":
            body = large_page()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def rendered(base: str, files: list[str]) -> dict[str, dict[str, Any]]:
    """Each page's HTML as the crawler takes it: rendered, then copied from the live DOM."""
    from playwright.async_api import async_playwright

    from agent_patterns.crawl.browser import BASE_ARGS, chromium_executable
    from agent_patterns.crawl.markdown import SOURCE_JS
    from agent_patterns.crawl.types import PageLimits

    out: dict[str, dict[str, Any]] = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_executable(), args=list(BASE_ARGS))
        page = await browser.new_page()
        for name in files:
            await page.goto(f"{base}/{name}", wait_until="load")
            out[name] = await page.evaluate(SOURCE_JS, PageLimits().html_chars)
        await browser.close()
    return out


@dataclass
class Row:
    label: str
    must_have: float = 0.0  # share present
    must_not: float = 0.0  # share absent
    fidelity: float = 0.0  # share of all checks passed
    ms_page: float = 0.0  # mean over the page shapes of the median per page
    ms_large: float = 0.0
    misses: list[str] = field(default_factory=list)
    note: str = ""


def timed(convert: Convert, source: dict[str, Any], url: str, rounds: int) -> tuple[str, float]:
    markdown, times = "", []
    for _ in range(rounds):
        t0 = time.perf_counter()
        markdown = convert(source, url)
        times.append((time.perf_counter() - t0) * 1000)
    return markdown, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--verbose", action="store_true", help="print each miss and each leak")
    parser.add_argument("--only", help="run only this candidate")
    parser.add_argument("--only-prefix", action="append", help="run only candidates starting so (repeatable)")
    parser.add_argument("--show", help="print this page's Markdown (file name) from each candidate")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    files = [c.file for c in CASES]
    pages = asyncio.run(rendered(base, [*files, "large.html"]))
    server.shutdown()
    print(f"{len(CASES)} pages, {sum(len(c.must) + len(c.must_not) for c in CASES)} checks; rounds {args.rounds}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start", flush=True)
    from importlib.metadata import PackageNotFoundError, version

    for package in ("crawl4ai", "trafilatura", "readability-lxml", "html-to-markdown", "markdownify", "html2text"):
        with contextlib.suppress(PackageNotFoundError):
            print(f"  {package} {version(package)}")

    rows: list[Row] = []
    for label, convert in CANDIDATES.items():
        if args.only and args.only != label:
            continue
        if args.only_prefix and not any(label.startswith(prefix) for prefix in args.only_prefix):
            continue
        try:
            convert({"html": "<p>x</p>", "lang": "", "heading": "", "truncated": False}, base)
        except ImportError as exc:
            rows.append(Row(label, note=f"not installed ({exc.name})"))
            continue
        present = absent = musts = must_nots = 0
        times: list[float] = []
        notes: list[str] = []
        case: Case
        for case in CASES:
            url = f"{base}/{case.file}"
            markdown, ms = timed(convert, pages[case.file], url, args.rounds)
            times.append(ms)
            result = score(markdown, case, base)
            musts += len(case.must)
            must_nots += len(case.must_not)
            present += len(case.must) - len(result.missing)
            absent += len(case.must_not) - len(result.leaked)
            notes += [f"{case.file}: missing {m}" for m in result.missing]
            notes += [f"{case.file}: leaked {m}" for m in result.leaked]
            if args.show == case.file:
                print(f"----- {label}: {case.file}\n{markdown}\n-----")
        _, large_ms = timed(convert, pages["large.html"], f"{base}/large.html", max(3, args.rounds // 4))
        fidelity = (present + absent) / (musts + must_nots)
        rows.append(Row(label, present / musts, absent / must_nots, fidelity, statistics.mean(times), large_ms, notes))

    mine = next((r for r in rows if r.label == "ours: crawl/markdown.py" and not r.note), None)
    print(
        f"\n{'candidate':36} {'must-have':>9} {'must-not':>9} {'fidelity':>8} {'ms/page':>8} {'ms large':>8}"
        + (f" {'time / ours':>11} {'large / ours':>12}" if mine else "")
    )
    for row in rows:
        if row.note:
            print(f"{row.label:36} {row.note}")
            continue
        print(
            f"{row.label:36} {row.must_have:9.0%} {row.must_not:9.0%} {row.fidelity:8.0%}"
            f" {row.ms_page:8.2f} {row.ms_large:8.1f}"
            + (f" {row.ms_page / mine.ms_page:10.2f}x {row.ms_large / mine.ms_large:11.2f}x" if mine else "")
        )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
    if args.verbose:
        for row in rows:
            print(f"\n{row.label}:")
            for line in row.misses:
                print("   ", line)


if __name__ == "__main__":
    main()
