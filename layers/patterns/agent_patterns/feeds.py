"""Fan-out of run events: one Redis reader per run per process, shared by all its subscribers.

A thousand clients watching one run cost one blocking XREAD, not a thousand, so streams never
starve the connection pool. A subscriber joins the feed first and replays from Redis second;
events seen by both are dropped by id, so there is no gap between replay and follow and no
duplicate. A subscriber too slow to keep its bounded queue drained is cut off (it reconnects
with Last-Event-ID and replays from Redis): memory stays bounded and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from agent_patterns.events import RunEvent, read_after, replay
from agent_patterns.runs import parse_run_id

FEED_BLOCK_MS = 2000
SUBSCRIBER_QUEUE_SIZE = 2000


def id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


class SlowConsumerError(Exception):
    """The subscriber fell a whole queue behind; it should reconnect and replay."""


class _Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[RunEvent | None] = asyncio.Queue(SUBSCRIBER_QUEUE_SIZE)
        self.overflowed = False

    def offer(self, event: RunEvent | None) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.get_nowait()
                self.queue.put_nowait(None)  # wake the reader so it sees the overflow


class _Feed:
    def __init__(self, run_id: str, cursor: str) -> None:
        self.run_id = run_id
        self.cursor = cursor
        self.subscribers: set[_Subscriber] = set()
        self.task: asyncio.Task[None] | None = None
        self.finished = False

    async def pump(self) -> None:
        try:
            while self.subscribers:
                batch = await read_after(self.run_id, self.cursor, block_ms=FEED_BLOCK_MS)
                for event in batch:
                    self.cursor = event.id
                    for sub in list(self.subscribers):
                        sub.offer(event)
                    if event.terminal:
                        self.finished = True
                        return
        except Exception:
            from agent_patterns.observability import logger

            logger.exception("run feed failed", extra={"run_id": self.run_id})
            for sub in list(self.subscribers):  # subscribers end; clients reconnect and replay
                sub.offer(None)
        finally:
            self.finished = True
            _forget(self)


_FEEDS: dict[str, _Feed] = {}


def _forget(feed: _Feed) -> None:
    if _FEEDS.get(feed.run_id) is feed:
        del _FEEDS[feed.run_id]


def active_feeds() -> dict[str, int]:
    """Run id → subscriber count of the readers running in this process (for health and tests)."""
    return {run_id: len(feed.subscribers) for run_id, feed in _FEEDS.items()}


async def _latest_id(run_id: str) -> str:
    from agent_patterns.backends import get_redis
    from agent_patterns.events import stream_key

    last = await get_redis().xrevrange(stream_key(run_id), count=1)
    return str(last[0][0]) if last else "0-0"


async def subscribe(run_id: str, after: str | None = None) -> AsyncIterator[RunEvent]:
    """Every event of the run after `after` (or from the start), once each, in order; then new
    ones as they are published, until a terminal event. Leaving the loop frees the reader."""
    rid = parse_run_id(run_id)
    sub = _Subscriber()
    feed = _FEEDS.get(rid)
    if feed is None or feed.finished:
        feed = _Feed(rid, await _latest_id(rid))
        _FEEDS[rid] = feed
    feed.subscribers.add(sub)
    if feed.task is None:
        feed.task = asyncio.create_task(feed.pump(), name=f"run-feed:{rid}")
    try:
        cursor = after
        while True:  # replay in pages; the feed buffers what arrives meanwhile
            page = await replay(rid, after=cursor, count=500)
            for event in page:
                cursor = event.id
                yield event
                if event.terminal:
                    return
            if len(page) < 500:
                break
        seen = id_key(cursor) if cursor else (-1, -1)
        while True:
            live = await sub.queue.get()
            if live is None:
                if sub.overflowed:
                    raise SlowConsumerError(f"subscriber of run {rid} fell behind; reconnect to resume")
                return  # the feed failed: end so the client reconnects and replays
            if id_key(live.id) <= seen:
                continue
            seen = id_key(live.id)
            yield live
            if live.terminal:
                return
    finally:
        feed.subscribers.discard(sub)
        if not feed.subscribers and feed.task is not None and not feed.task.done():
            feed.task.cancel()
            _forget(feed)
