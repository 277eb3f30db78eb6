"""`GET /v1/crawls/{run_id}`: each page with its Markdown, language and content hash, as the
worker stored them in crawl_pages; a report holds as much Markdown as fits, `pages_next` says
where the rest starts."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from agent_patterns.crawl import jobs
from tests.conftest import LiveServer, bearer, function_client
from tests.functions.test_crawl_function import Site, run_worker
from tests.pages.site import pages_site


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    app, _ = pages_site()
    with LiveServer(app) as live:
        yield Site(live.url, Counter(), f"127.0.0.1:{live.port}")


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with function_client("crawl") as client:
        yield client


async def test_the_report_has_each_pages_markdown_language_and_hash_in_windows_that_fit(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"url": site.base + "/", "max_pages": 4}
    run_id = (await api.post("/v1/crawls", json=body, headers=bearer())).json()["run_id"]
    assert await run_worker(sent.pop()) == {"batchItemFailures": []}

    report = (await api.get(f"/v1/crawls/{run_id}", headers=bearer())).json()
    assert report["status"] == "complete" and "pages_next" not in report
    pages = {p["url"]: p for p in report["pages"]}
    assert list(pages) == [site.base + p for p in ("/", "/docs.html", "/blog.html", "/spa.html")]
    for page in pages.values():
        assert {"markdown", "lang", "content_hash"} <= set(page)
        assert page["content_hash"] == hashlib.sha256(page["markdown"].encode()).hexdigest()
    docs = pages[site.base + "/docs.html"]
    assert (
        docs["markdown"].startswith("# Configuration\n")
        and "| port | 8080 | TCP port to listen on |" in docs["markdown"]
    )
    assert docs["lang"] == "en" and pages[site.base + "/blog.html"]["lang"] == "en-GB"
    assert "What's new in Chatterbox 4.2" in pages[site.base + "/spa.html"]["markdown"]
    assert docs["links"] and docs["title"] == "Configuration · Widgetry Docs"  # links and forms as before

    # A report carries at most REPORT_MARKDOWN_BYTES of Markdown (and always one page): the
    # pages after it come with `pages_from=<pages_next>`.
    monkeypatch.setattr(jobs, "REPORT_MARKDOWN_BYTES", len(docs["markdown"].encode()) + 10)
    walked: list[dict[str, Any]] = []
    windows = 0
    position: int | None = 0
    while position is not None:
        part = (await api.get(f"/v1/crawls/{run_id}", params={"pages_from": position}, headers=bearer())).json()
        assert part["pages"] and part["status"] == "complete"
        walked += part["pages"]
        windows += 1
        position = part.get("pages_next")
    assert walked == report["pages"] and 2 < windows <= 4
    assert (await api.get(f"/v1/crawls/{run_id}", params={"pages_from": 4}, headers=bearer())).json()["pages"] == []
    assert (await api.get(f"/v1/crawls/{run_id}", params={"pages_from": -1}, headers=bearer())).status_code == 422
