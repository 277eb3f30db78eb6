"""Crawls of hostile pages: a script that never yields cannot hang a crawl past its limits."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent_patterns.crawl import CrawlConfig, run_crawl
from tests.conftest import LiveServer
from tests.crawl_site import page

BUSY_AFTER_LOAD = "<script>addEventListener('load', () => setTimeout(() => { for (;;) {} }, 0))</script>"


def hostile_site() -> Starlette:
    async def home(request: Request) -> Response:
        links = " ".join(f'<a href="/fine/{i}">fine {i}</a>' for i in range(4))
        return page("Home", f'{links} <a href="/busy">busy</a>')

    async def fine(request: Request) -> Response:
        return page(f"Fine {request.path_params['n']}", '<a href="/">home</a>')

    async def busy(request: Request) -> Response:
        return page("Busy", '<a href="/after-busy">next</a>' + BUSY_AFTER_LOAD)

    async def after_busy(request: Request) -> Response:
        return page("After", "")

    return Starlette(
        routes=[
            Route("/", home),
            Route("/fine/{n:int}", fine),
            Route("/busy", busy),
            Route("/after-busy", after_busy),
        ]
    )


@pytest.fixture(scope="module")
def site() -> Iterator[LiveServer]:
    with LiveServer(hostile_site()) as live:
        yield live


async def test_a_page_whose_script_never_yields_times_out_and_the_crawl_goes_on(site: LiveServer) -> None:
    config = CrawlConfig(
        url=site.url + "/", allowed_private_hosts=(f"127.0.0.1:{site.port}",), page_timeout_s=2.0, concurrency=2
    )
    began = time.monotonic()
    result = await run_crawl(config)
    took = time.monotonic() - began
    assert result.error_message is None, result.error_message
    crawled = {p["url"].removeprefix(site.url) for p in result.crawl_data["pages"]}
    assert {"/", "/fine/0", "/fine/1", "/fine/2", "/fine/3"} <= crawled
    skipped = {s["url"].removeprefix(site.url): s["reason"] for s in result.crawl_data["skipped"]}
    assert skipped.get("/busy") == "timeout", skipped
    assert took < 30, f"the crawl took {took:.1f} s"


async def test_the_total_time_limit_holds_while_a_page_is_stuck(site: LiveServer) -> None:
    config = CrawlConfig(
        url=site.url + "/busy",
        allowed_private_hosts=(f"127.0.0.1:{site.port}",),
        page_timeout_s=60.0,
        total_time_limit_s=3.0,
        concurrency=1,
    )
    began = time.monotonic()
    result = await run_crawl(config)
    took = time.monotonic() - began
    assert took < 15, f"the crawl took {took:.1f} s with a 3 s limit"
    skipped = {s["url"].removeprefix(site.url): s["reason"] for s in result.crawl_data["skipped"]}
    assert skipped.get("/busy") in ("timeout", "limit reached"), (skipped, result.crawl_data["pages"])
