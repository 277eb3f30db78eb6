"""Crawls of hostile pages: a script that never yields cannot hang a crawl past its limits."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent_patterns.crawl import CrawlConfig, run_crawl
from agent_patterns.crawl.types import PageLimits
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

    async def bomb(request: Request) -> Response:
        links = "".join(f'<a href="/x/{i}">.</a>' for i in range(20_000))
        forms = "".join(f'<form action="/f{i}"><input name="a{i}"></form>' for i in range(300))
        many_fields = "<form action='/wide'>" + "".join(f'<input name="w{i}">' for i in range(500)) + "</form>"
        return Response(
            f"<!doctype html><html><head><title>{'T' * 100_000}</title></head><body>{many_fields}{forms}{links}</body></html>",
            media_type="text/html",
        )

    return Starlette(
        routes=[
            Route("/", home),
            Route("/fine/{n:int}", fine),
            Route("/busy", busy),
            Route("/after-busy", after_busy),
            Route("/bomb", bomb),
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


async def test_a_link_bomb_page_is_cut_to_the_page_limits_and_says_so(site: LiveServer) -> None:
    limits = PageLimits(links=100, forms=10, fields=20, text_chars=200, markdown_bytes=20_000)
    config = CrawlConfig(
        url=site.url + "/bomb", allowed_private_hosts=(f"127.0.0.1:{site.port}",), max_pages=1, limits=limits
    )
    result = await run_crawl(config)
    assert result.error_message is None, result.error_message
    (bomb,) = result.crawl_data["pages"]
    assert len(bomb["links"]) == 100 and len(bomb["title"]) == 200
    assert len(bomb["forms"]) == 10 and all(len(f["fields"]) <= 20 for f in bomb["forms"])
    assert len(bomb["markdown"].encode()) <= 20_000  # 20,000 links of Markdown, cut
    assert result.crawl_data["truncated"] == [
        {"url": site.url + "/bomb", "what": sorted(["fields", "forms", "links", "markdown", "title"])}
    ]
    assert len(json.dumps(result.crawl_data)) < 100_000  # not the megabytes the page holds


def test_the_browsers_own_refused_traffic_is_not_counted_as_the_sites() -> None:
    from agent_patterns.crawl.engine import site_blocked
    from agent_patterns.crawl.netguard import BlockedRequest

    own = BlockedRequest("update.googleapis.com:443", "no address", "update.googleapis.com")
    site = BlockedRequest("http://10.1.2.3/admin", "private address", "10.1.2.3")
    scheme = BlockedRequest("ftp://x/", "only http(s) URLs are proxied")
    assert site_blocked([own, site, scheme], {"10.1.2.3", "127.0.0.1"}) == [site, scheme]
