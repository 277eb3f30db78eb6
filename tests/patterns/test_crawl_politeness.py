"""Polite crawls: at most `max_requests_per_second` document requests to the crawled origin
(page navigations, robots.txt, sitemaps, a page's own iframes), robots.txt's Crawl-delay honoured
when robots.txt is, the effective limit recorded. Real Chromium against a local site that notes
when each request arrived."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from agent_patterns.crawl import CrawlConfig, run_crawl
from agent_patterns.crawl.politeness import OriginRateLimit, crawl_delay
from tests.conftest import LiveServer

PAGES = [f"/p/{n}" for n in range(6)]


@dataclass
class Site:
    base: str
    documents: list[tuple[str, float]] = field(default_factory=list)  # (path, arrival) of each document
    assets: list[str] = field(default_factory=list)  # sub-resources served (never rate limited)
    robots: str = "User-agent: *\nDisallow: /nowhere/\n"
    page_seconds: float = 0.0  # how long a page takes to serve
    in_flight: int = 0
    most_in_flight: int = 0

    def reset(self, *, robots: str = "User-agent: *\nDisallow: /nowhere/\n", page_seconds: float = 0.0) -> None:
        self.documents.clear()
        self.assets.clear()
        self.robots, self.page_seconds, self.in_flight, self.most_in_flight = robots, page_seconds, 0, 0

    def config(self, **kw: Any) -> CrawlConfig:
        host = self.base.split("//", 1)[1]
        return CrawlConfig(url=self.base + "/", allowed_private_hosts=(host,), page_timeout_s=5, concurrency=4, **kw)

    def arrivals(self) -> list[float]:
        return sorted(at for _, at in self.documents)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    state = Site("")

    async def document(request: Request) -> Response:
        state.documents.append((request.url.path, time.monotonic()))
        state.in_flight += 1
        state.most_in_flight = max(state.most_in_flight, state.in_flight)
        try:
            await asyncio.sleep(state.page_seconds)
        finally:
            state.in_flight -= 1
        path = request.url.path
        links = "".join(f'<a href="{p}">{p}</a> ' for p in PAGES) if path == "/" else '<a href="/">home</a>'
        frame = '<iframe src="/frame"></iframe>' if path == "/p/0" else ""
        return HTMLResponse(
            f'<!doctype html><html><head><title>{path}</title><link rel="stylesheet" href="/style.css">'
            f'<script src="/app.js"></script></head><body><main><h1>{path}</h1>{links}{frame}</main></body></html>'
        )

    async def asset(request: Request) -> Response:
        state.assets.append(request.url.path)
        if request.url.path == "/favicon.ico":
            return Response(status_code=404)
        kind = "text/css" if request.url.path.endswith(".css") else "text/javascript"
        return Response("/* */", media_type=kind)

    async def robots_txt(request: Request) -> Response:
        state.documents.append(("/robots.txt", time.monotonic()))
        return PlainTextResponse(state.robots)

    async def sitemap_xml(request: Request) -> Response:
        state.documents.append(("/sitemap.xml", time.monotonic()))
        return Response(status_code=404)

    async def frame(request: Request) -> Response:
        state.documents.append(("/frame", time.monotonic()))
        return HTMLResponse("<!doctype html><title>frame</title>framed")

    app = Starlette(
        routes=[
            Route("/robots.txt", robots_txt),
            Route("/sitemap.xml", sitemap_xml),
            Route("/style.css", asset),
            Route("/app.js", asset),
            Route("/favicon.ico", asset),  # Chromium's own icon fetch: a sub-resource, not a document
            Route("/frame", frame),
            Route("/{path:path}", document),
        ]
    )
    with LiveServer(app) as live:
        state.base = live.url
        yield state


def assert_spaced(arrivals: list[float], interval: float, slack: float = 0.5) -> None:
    """No burst: any k+1 consecutive requests span at least k intervals, less `slack`: the crawler
    spaces its requests exactly (unit-tested below), but on a busy CI machine one may take up to
    ~0.4 s to reach the server (seen once), squeezing its gap to the next. Four tabs let loose at
    once still arrive within far less than 3 intervals - slack."""
    for i in range(len(arrivals)):
        for j in range(i + 1, len(arrivals)):
            assert arrivals[j] - arrivals[i] >= (j - i) * interval - slack, (i, j, arrivals)


async def test_the_origin_never_gets_more_requests_per_second_than_the_limit(site: Site) -> None:
    site.reset()
    result = await run_crawl(site.config(max_requests_per_second=5))
    assert result.error_message is None and result.pages_crawled == 1 + len(PAGES)
    paths = {path for path, _ in site.documents}
    assert {"/robots.txt", "/sitemap.xml", "/frame", "/", *PAGES} <= paths  # every kind of document counted
    assert len(site.documents) == len(PAGES) + 4
    assert_spaced(site.arrivals(), 1 / 5)  # 4 tabs, yet one request each 0.2 s
    assert site.assets  # a page's scripts and stylesheets still load (they are not counted)
    assert result.crawl_data["rate_limit"] == {"max_requests_per_second": 5.0, "requested": 5.0}


async def test_without_a_limit_the_tabs_crawl_in_parallel(site: Site) -> None:
    site.reset(page_seconds=0.4)
    result = await run_crawl(site.config(use_sitemap=False))
    assert result.pages_crawled == 1 + len(PAGES)
    assert site.most_in_flight == 4  # concurrency 4: four pages at once on the server
    first = sorted(at for path, at in site.documents if path in PAGES)[:4]
    assert first[-1] - first[0] < 0.3  # started together, not spaced
    assert result.crawl_data["rate_limit"] == {"max_requests_per_second": None, "requested": None}


async def test_a_crawl_delay_in_robots_txt_slows_the_crawl_and_is_recorded(site: Site) -> None:
    site.reset(robots="User-agent: *\nCrawl-delay: 0.5\nDisallow: /nowhere/\n")
    result = await run_crawl(site.config(max_pages=3, max_requests_per_second=20))
    assert [path for path, _ in sorted(site.documents, key=lambda d: d[1])][:2] == ["/robots.txt", "/sitemap.xml"]
    assert len(site.documents) == 6  # robots.txt, sitemap.xml, /, /p/0 with its frame, /p/1
    assert_spaced(site.arrivals(), 0.5)  # robots.txt's delay, not the 20 per second asked for
    assert result.crawl_data["rate_limit"] == {"max_requests_per_second": 2.0, "requested": 20, "crawl_delay": 0.5}
    site.reset(robots="User-agent: *\nCrawl-delay: 0.5\n")
    ignored = await run_crawl(site.config(max_pages=1, respect_robots=False, use_sitemap=False))
    assert ignored.crawl_data["rate_limit"] == {"max_requests_per_second": None, "requested": None}


def test_crawl_delay_is_read_from_the_group_that_applies_to_us() -> None:
    assert crawl_delay("User-agent: *\nCrawl-delay: 3\n", "agent-patterns") == 3
    assert (
        crawl_delay("User-agent: *\nCrawl-delay: 3\n\nUser-agent: agent-patterns\nDisallow: /x\n", "agent-patterns")
        is None
    )
    assert crawl_delay("User-agent: other\nUser-agent: Agent-Patterns\nCrawl-delay: 1.5\n", "agent-patterns") == 1.5
    assert (
        crawl_delay("User-agent: other\nCrawl-delay: 9\n\nUser-agent: *\nCrawl-delay: 2 # seconds\n", "agent-patterns")
        == 2
    )
    assert (
        crawl_delay("User-agent: *\nCrawl-delay: soon\nCrawl-delay: -1\nCrawl-delay: nan\n", "agent-patterns") is None
    )
    assert crawl_delay("Disallow: /\n", "agent-patterns") is None


def test_a_continuation_keeps_the_next_slot_and_a_huge_crawl_delay_is_capped() -> None:
    limit = OriginRateLimit("https://a.example/", 1.0)
    first, second = limit.reserve(), limit.reserve()
    assert second - first == pytest.approx(1.0)
    resumed = OriginRateLimit("https://a.example:443/x", 1.0, resume_at=limit.resume_at())
    assert resumed.next_slot() - time.monotonic() == pytest.approx(second + 1.0 - time.monotonic(), abs=0.05)
    assert resumed.covers("https://A.example/page") and not resumed.covers("http://a.example/")
    resumed.set_crawl_delay(3600)  # a site asking for one request an hour gets one each 20 s
    assert resumed.describe() == {"max_requests_per_second": 0.05, "requested": 1.0, "crawl_delay": 3600}


async def test_tabs_taking_slots_at_once_are_let_go_an_interval_apart() -> None:
    limit = OriginRateLimit("https://a.example/", 20.0)
    released: list[float] = []

    async def tab() -> None:
        for _ in range(3):
            await limit.take(limit.reserve())
            released.append(time.monotonic())
            await asyncio.sleep(0)  # a tab's page work: the event loop runs others meanwhile

    await asyncio.gather(*(tab() for _ in range(4)))
    gaps = [b - a for a, b in itertools.pairwise(released)]
    assert len(released) == 12 and min(gaps) >= 0.05 - 1e-3  # however late the loop ran a slot's task
