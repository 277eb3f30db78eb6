"""What a crawl's progress events say of each page (for the run viewer's table): its status,
title (cut short) and number of forms, or why it failed; with `index`, whether it was queued for
the index and, as indexing finishes, its outcome. Never Markdown, links or form fields."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from agent_patterns.runs import events
from tests.conftest import bearer, function_client
from tests.functions.test_crawl_function import Site, run_worker, serve_site
from tests.llm_stub import StubProviders


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with serve_site() as served:
        yield served


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with function_client("crawl") as client:
        yield client


async def crawl(api: httpx.AsyncClient, sent: list[dict[str, Any]], body: dict[str, Any]) -> list[dict[str, Any]]:
    run_id = (await api.post("/v1/crawls", json=body, headers=bearer())).json()["run_id"]
    assert await run_worker(sent.pop()) == {"batchItemFailures": []}
    return [e.payload for e in await events.replay(run_id) if e.type in ("running", "complete")]


async def test_each_page_event_carries_status_title_and_forms(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site
) -> None:
    body = {"url": site.base + "/contact", "max_pages": 3, "use_sitemap": False, "max_requests_per_second": 50}
    progress = [p for p in await crawl(api, sent, body) if p.get("url")]
    pages = {p["url"].removeprefix(site.base): p["page"] for p in progress}
    assert pages["/contact"] == {"status": 200, "title": "Contact", "forms": 1}
    assert pages["/"] == {"status": 200, "title": "Home", "forms": 0}
    assert all(set(p["page"]) <= {"status", "title", "forms", "error"} for p in progress)
    assert all("markdown" not in str(p) for p in progress)


async def test_an_indexing_crawl_reports_each_pages_index_outcome_and_the_totals(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site, stub: StubProviders
) -> None:
    import uuid

    body = {"url": site.base + "/contact", "max_pages": 3, "use_sitemap": False, "index": f"c{uuid.uuid4().hex[:8]}"}
    payloads = await crawl(api, sent, body)
    complete = payloads[-1]
    progress = payloads[:-1]
    queued = [p["url"] for p in progress if p.get("url") and p["page"].get("index") == "queued"]
    outcomes = [o for p in progress for o in p.get("indexed", [])]
    assert sorted(o["url"] for o in outcomes) == sorted(queued)  # each queued page's outcome, once
    counts = {k: sum(o["outcome"] == k for o in outcomes) for k in ("added", "changed", "unchanged", "failed")}
    assert complete["index"] == {**counts, "removed": 0} and counts["added"] == len(queued) > 0


def test_a_page_event_stays_small() -> None:
    from agent_patterns.crawl.jobs import _page_event

    page = {"status": 200, "title": "t" * 1000, "forms": [{}] * 3, "markdown": "x" * 100_000, "links": ["a"] * 999}
    assert _page_event(page, None) == {"status": 200, "title": "t" * 200, "forms": 3}
    assert _page_event(None, "timeout") == {"error": "timeout"}
