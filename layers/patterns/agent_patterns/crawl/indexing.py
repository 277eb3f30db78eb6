"""Crawl to index: each crawled page becomes a document of the tenant's search index as it
arrives (id = its canonical URL, text = its Markdown), so a crawl feeds `/v1/search` and
`/v1/answer` directly.

A re-crawl embeds only pages whose content hash changed (embeddings cost money and time);
unchanged pages are counted, not rewritten. With `prune`, pages of the same site and collection
that this crawl no longer found are removed when it completes. Counts of what was added,
changed, left unchanged and removed go to the run's progress events and its result.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from urllib.parse import urldefrag

from agent_patterns.backends import get_redis
from agent_patterns.observability import logger
from agent_patterns.runs.records import parse_run_id

INDEX_COUNTS_TTL_S = 6 * 3600  # a run's counts outlive its continuations (as its checkpoint)
INDEX_CONCURRENCY = 4
OUTCOMES = ("added", "changed", "unchanged", "failed")


def counts_key(run_id: str) -> str:
    return f"run:{parse_run_id(run_id)}:index"


def canonical(page: dict[str, Any]) -> str:
    """A page's document id: the URL it ended at, without a fragment."""
    return urldefrag(str(page.get("final_url") or page["url"]))[0]


class Indexer:
    """Indexes pages as the crawl reports them, a few at a time, off the crawl's own path."""

    def __init__(self, tenant_id: str, run_id: str, root: str, collection: str | None) -> None:
        self.tenant_id, self.run_id, self.root, self.collection = tenant_id, run_id, root, collection
        self.slots = asyncio.Semaphore(INDEX_CONCURRENCY)
        self.tasks: list[asyncio.Task[str]] = []
        self.indexed = 0
        self.outcomes: list[dict[str, str]] = []  # {url, outcome} of pages done since take_outcomes()

    def offer(self, page: dict[str, Any] | None) -> bool:
        """Index `page` in the background; False when it is not indexed (failed, no Markdown, 4xx/5xx)."""
        if page is None or not page.get("markdown") or int(page.get("status") or 0) >= 400:
            return False
        self.tasks.append(asyncio.create_task(self._index(page)))
        return True

    def take_outcomes(self) -> list[dict[str, str]]:
        """The pages indexed since the last call, each `{url, outcome}` (for progress events)."""
        taken, self.outcomes = self.outcomes, []
        return taken

    async def _index(self, page: dict[str, Any]) -> str:
        from agent_patterns.search import DocumentInput, ingest
        from agent_patterns.search.documents import stored_metadata

        async with self.slots:
            doc_id = canonical(page)
            try:
                before = (await stored_metadata(self.tenant_id, [doc_id])).get(doc_id)
                if before is not None and before.get("content_hash") == page.get("content_hash"):
                    outcome = "unchanged"
                else:
                    metadata = {
                        "url": doc_id,
                        "title": page.get("title") or "",
                        "crawled_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                        "content_hash": page.get("content_hash"),
                        "lang": page.get("lang"),
                        "crawl_root": self.root,
                        "crawl_run": self.run_id,
                        **({"collection": self.collection} if self.collection else {}),
                    }
                    text = str(page["markdown"])
                    await ingest(self.tenant_id, [DocumentInput(text=text, id=doc_id, metadata=metadata)])
                    outcome = "changed" if before is not None else "added"
            except Exception as exc:  # one page failing to index never fails the crawl
                logger.warning("page not indexed", extra={"url": doc_id, "error": str(exc)[:300]})
                outcome = "failed"
            self.indexed += outcome != "failed"
            self.outcomes.append({"url": str(page["url"]), "outcome": outcome})
            async with get_redis().pipeline(transaction=True) as pipe:
                pipe.hincrby(counts_key(self.run_id), outcome, 1)
                pipe.expire(counts_key(self.run_id), INDEX_COUNTS_TTL_S)
                await pipe.execute()
            return outcome

    async def drain(self) -> None:
        """Wait for every page offered so far (before the step saves its state or completes)."""
        if self.tasks:
            await asyncio.gather(*self.tasks)


async def prune(tenant_id: str, root: str, collection: str | None, keep: set[str]) -> int:
    """Remove the site's documents (same crawl root and collection) this crawl did not find."""
    from agent_patterns.search import remove_document
    from agent_patterns.search.documents import documents_where

    where = {"crawl_root": root, **({"collection": collection} if collection else {})}
    removed = 0
    for doc_id in await documents_where(tenant_id, where):
        if doc_id not in keep:
            await remove_document(tenant_id, doc_id)
            removed += 1
    return removed


async def counts(run_id: str) -> dict[str, int]:
    raw = await get_redis().hgetall(counts_key(run_id))
    return {name: int(raw.get(name, 0)) for name in OUTCOMES}
