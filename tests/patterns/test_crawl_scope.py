"""Polite, scoped crawls: robots.txt is honoured by default (and its absence or failure is
recorded), include/exclude path patterns bound the frontier. Real Chromium, a local site that
counts what it served."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from agent_patterns.crawl import CrawlConfig, CrawlResult, run_crawl
from tests.conftest import LiveServer

ROBOTS = "User-agent: *\nDisallow: /private/\n\nUser-agent: agent-patterns\nDisallow: /private/\nDisallow: /drafts/\n"
LINKS = ["/docs/a", "/docs/b", "/blog/one", "/private/secret", "/drafts/next"]


@dataclass
class Site:
    base: str
    hits: Counter[str]
    robots: dict[str, Any]  # {"status": 200, "text": ...}: what /robots.txt answers

    def config(self, **kw: Any) -> CrawlConfig:
        host = self.base.split("//", 1)[1]
        return CrawlConfig(url=self.base + "/", allowed_private_hosts=(host,), page_timeout_s=2, concurrency=3, **kw)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    hits: Counter[str] = Counter()
    robots: dict[str, Any] = {"status": 200, "text": ROBOTS}

    async def page(request: Request) -> Response:
        hits[request.url.path] += 1
        links = "".join(f'<a href="{link}">{link}</a> ' for link in LINKS)
        return HTMLResponse(
            f"<html><head><title>{request.url.path}</title></head><body><main>{links}</main></body></html>"
        )

    async def robots_txt(request: Request) -> Response:
        hits["/robots.txt"] += 1
        return PlainTextResponse(robots["text"], status_code=robots["status"])

    async def sitemap_xml(request: Request) -> Response:
        hits["/sitemap.xml"] += 1
        base = str(request.base_url).rstrip("/")
        urls = [f"{base}/orphan", f"{base}/private/listed", "https://elsewhere.example/page", f"{base}/docs/a"]
        body = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
        xml = f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</urlset>'
        return Response(xml, media_type="application/xml")

    app = Starlette(
        routes=[Route("/robots.txt", robots_txt), Route("/sitemap.xml", sitemap_xml), Route("/{path:path}", page)]
    )
    with LiveServer(app) as live:
        yield Site(live.url, hits, robots)


def crawled(result: CrawlResult) -> set[str]:
    return {str(p["url"]).split("//", 1)[1].split("/", 1)[1] for p in result.crawl_data["pages"]}


def reasons(result: CrawlResult) -> dict[str, str]:
    return {s["url"].split("//", 1)[1].split("/", 1)[1]: s["reason"] for s in result.crawl_data["skipped"]}


async def test_robots_txt_is_honoured_for_our_agent_and_recorded(site: Site) -> None:
    site.hits.clear()
    result = await run_crawl(site.config())
    assert crawled(result) == {"", "docs/a", "docs/b", "blog/one", "orphan"}  # orphan: only in the sitemap
    assert site.hits["/private/secret"] == 0 and site.hits["/drafts/next"] == 0  # never fetched
    assert reasons(result)["private/secret"] == "disallowed by robots.txt"
    assert reasons(result)["drafts/next"] == "disallowed by robots.txt"  # the group for our token
    assert result.crawl_data["robots"] == {"respected": True, "status": "found", "url": site.base + "/robots.txt"}
    assert site.hits["/robots.txt"] == 1


async def test_the_sitemap_seeds_pages_no_link_reaches_within_scope(site: Site) -> None:
    site.hits.clear()
    result = await run_crawl(site.config())
    assert "orphan" in crawled(result) and site.hits["/private/listed"] == 0  # robots still applies
    # orphan and docs/a; not private/listed (robots.txt) nor the other origin
    assert result.crawl_data["sitemap"] == {"status": "found", "url": site.base + "/sitemap.xml", "seeded": 2}
    without = await run_crawl(site.config(use_sitemap=False))
    assert "orphan" not in crawled(without) and "sitemap" not in without.crawl_data


async def test_a_sitemap_that_is_not_there_is_recorded_with_the_url_looked_for(site: Site) -> None:
    named = site.base + "/not-a-sitemap.xml"  # robots.txt names it; it answers an HTML page
    site.robots["text"] = ROBOTS + f"\nSitemap: {named}\n"
    try:
        result = await run_crawl(site.config(max_pages=2))
    finally:
        site.robots["text"] = ROBOTS
    assert result.crawl_data["sitemap"] == {"status": "absent", "url": named, "seeded": 0}


async def test_opting_out_of_robots_is_recorded(site: Site) -> None:
    site.hits.clear()
    result = await run_crawl(site.config(respect_robots=False, use_sitemap=False))
    assert {"private/secret", "drafts/next"} <= crawled(result)
    assert result.crawl_data["robots"] == {"respected": False} and site.hits["/robots.txt"] == 0


@pytest.mark.parametrize(("status", "recorded"), [(404, "absent"), (503, "unavailable")])
async def test_a_missing_or_failing_robots_txt_crawls_without_rules_and_says_so(
    site: Site, status: int, recorded: str
) -> None:
    site.robots["status"] = status
    try:
        result = await run_crawl(site.config(use_sitemap=False))
    finally:
        site.robots["status"] = 200
    assert "private/secret" in crawled(result)
    assert result.crawl_data["robots"]["status"] == recorded


async def test_include_and_exclude_patterns_bound_the_frontier(site: Site) -> None:
    site.hits.clear()
    result = await run_crawl(site.config(include=("/docs/*",), exclude=("/docs/b",), use_sitemap=False))
    assert crawled(result) == {"", "docs/a"}  # the start page, then only what the patterns admit
    assert reasons(result)["blog/one"] == "not included by pattern"
    assert reasons(result)["docs/b"] == "excluded by pattern"
    assert site.hits["/blog/one"] == 0 and site.hits["/docs/b"] == 0
