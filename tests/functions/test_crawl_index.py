"""Crawl to index: `POST /v1/crawls` with `index` stores each page as a document of the tenant's
search index (id = its URL, text = its Markdown); a re-crawl re-embeds only the pages whose
content changed, and `prune` removes the pages the site no longer has."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from agent_patterns.search.documents import documents_where, get_document
from tests.conftest import LiveServer, bearer, function_client
from tests.functions.test_crawl_function import Site, run_worker
from tests.llm_stub import StubProviders
from tests.pages.site import Edition, pages_site


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Site, Edition]]:
    app, edition = pages_site()
    with LiveServer(app) as live:
        yield Site(live.url, Counter(), f"127.0.0.1:{live.port}"), edition


@pytest.fixture(scope="module")
def site(served: tuple[Site, Edition]) -> Site:
    return served[0]  # the `sent` fixture admits this host and captures the job messages


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with function_client("crawl") as client:
        yield client


async def crawl(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], tenant: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await api.post("/v1/crawls", json=body, headers=bearer(tenant))
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    assert await run_worker(sent.pop()) == {"batchItemFailures": []}
    report = (await api.get(f"/v1/crawls/{run_id}", headers=bearer(tenant))).json()
    assert report["status"] == "complete", report
    result: dict[str, Any] = report["result"]
    return result


def embedded(stub: StubProviders) -> list[str]:
    """The texts sent to the embeddings API so far."""
    texts: list[str] = []
    for provider, body in stub.requests:
        if provider == "embeddings":
            texts += body["input"] if isinstance(body["input"], list) else [body["input"]]
    return texts


async def test_a_crawl_feeds_the_index_and_a_recrawl_reembeds_only_what_changed(
    api: httpx.AsyncClient,
    sent: list[dict[str, Any]],
    served: tuple[Site, Edition],
    stub: StubProviders,
) -> None:
    import uuid

    site, edition = served
    t = "x" + uuid.uuid4().hex[:10]
    body = {"url": site.base + "/", "max_pages": 30, "index": "docs"}
    first = await crawl(api, sent, t, body)
    ids = await documents_where(t, {"collection": "docs"})
    assert first["index"]["added"] == len(ids) >= 5 and first["index"]["changed"] == 0
    changing = next(i for i in ids if i.endswith("/changing"))
    doc = await get_document(t, changing)
    assert doc["metadata"]["url"] == changing and doc["metadata"]["title"] == "Status"
    assert doc["metadata"]["content_hash"] and "Edition 1" in "".join(c["content"] for c in doc["chunks"])
    before = len(embedded(stub))
    edition.number = 2
    second = await crawl(api, sent, t, body)
    pages = first["index"]["added"] + first["index"]["unchanged"]  # two URLs may end at one page
    assert second["index"] == {"added": 0, "changed": 1, "unchanged": pages - 1, "failed": 0, "removed": 0}
    new_texts = embedded(stub)[before:]
    assert new_texts and all("Edition 2" in text or "Service status" in text for text in new_texts)
    assert "Edition 2" in "".join(c["content"] for c in (await get_document(t, changing))["chunks"])


async def test_prune_removes_the_pages_a_site_no_longer_has(
    api: httpx.AsyncClient,
    sent: list[dict[str, Any]],
    site: Site,
    stub: StubProviders,
) -> None:
    import uuid

    from agent_patterns.search import DocumentInput, ingest

    t = "y" + uuid.uuid4().hex[:10]
    root = site.base + "/"
    gone = site.base + "/removed-page"
    await ingest(t, [DocumentInput(text="old", id=gone, metadata={"crawl_root": root, "url": gone})])
    await ingest(t, [DocumentInput(text="mine", id="notes", metadata={"source": "upload"})])
    result = await crawl(api, sent, t, {"url": root, "max_pages": 30, "index": True, "prune": True})
    assert result["index"]["removed"] == 1
    left = await documents_where(t, {})
    assert gone not in left and "notes" in left  # only the crawled site's documents are pruned


async def test_prune_without_index_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/crawls", json={"url": "https://example.com/", "prune": True}, headers=bearer())
    assert response.status_code == 422 and "prune needs index" in response.text
    for extra in ({"index": "Bad Name"}, {"include": ["docs/*"]}, {"exclude": ["/" + "x" * 300]}):
        bad = await api.post("/v1/crawls", json={"url": "https://example.com/", **extra}, headers=bearer())
        assert bad.status_code == 422, extra
