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

from agent_patterns.runs.events import RunEvent, read_after, replay
from agent_patterns.runs.records import parse_run_id

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
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.cursor = "0-0"
        self.ready = asyncio.Event()  # set once the cursor is the stream's end at start
        self.subscribers: set[_Subscriber] = set()
        self.finished = False
        self.task = asyncio.create_task(self.pump(), name=f"run-feed:{run_id}")

    async def pump(self) -> None:
        try:
            self.cursor = await _latest_id(self.run_id)
            self.ready.set()
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
            self.ready.set()
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
    from agent_patterns.runs.events import stream_key

    last = await get_redis().xrevrange(stream_key(run_id), count=1)
    return str(last[0][0]) if last else "0-0"


class Subscription:
    """One subscriber's view of a run: replay from Redis, then the shared feed, deduplicated.

    Iterate it for single events, or call `next_batch` to take everything that is ready at once
    (what the SSE writer does: one write per batch, a cheap timeout for heartbeats).
    """

    REPLAY_PAGE = 500

    def __init__(self, run_id: str, after: str | None) -> None:
        self.run_id = parse_run_id(run_id)
        self._cursor = after
        self._seen = id_key(after) if after else (-1, -1)
        self._replaying = True
        self._done = False
        self._sub = _Subscriber()
        feed = _FEEDS.get(self.run_id)
        if feed is None or feed.finished:  # no await between the check and the registration
            feed = _FEEDS[self.run_id] = _Feed(self.run_id)
        feed.subscribers.add(self._sub)
        self._feed = feed
        self._pending: list[RunEvent] = []

    def _accept(self, batch: list[RunEvent]) -> list[RunEvent]:
        out = []
        for event in batch:
            key = id_key(event.id)
            if key <= self._seen:
                continue
            self._seen = key
            out.append(event)
            if event.terminal:
                self._done = True
                break
        return out

    async def next_batch(self, wait: float | None = None, limit: int = 256) -> list[RunEvent]:
        """The next events in order ([] if none came within `wait` seconds); raises
        StopAsyncIteration after the terminal event, SlowConsumerError if it fell behind."""
        if self._done:
            await self.aclose()
            raise StopAsyncIteration
        if self._replaying:
            await self._feed.ready.wait()  # replay must reach at least the feed's starting cursor
            page = await replay(self.run_id, after=self._cursor, count=self.REPLAY_PAGE)
            if page:
                self._cursor = page[-1].id
            if len(page) < self.REPLAY_PAGE:
                self._replaying = False
            accepted = self._accept(page)
            if accepted or self._replaying or self._done:
                return accepted
        queue = self._sub.queue
        if queue.empty():
            try:
                async with asyncio.timeout(wait):
                    first = await queue.get()
            except TimeoutError:
                return []
            raw = [first]
        else:
            raw = [queue.get_nowait()]
        while len(raw) < limit and not queue.empty():
            raw.append(queue.get_nowait())
        if any(e is None for e in raw):
            events = [e for e in raw[: raw.index(None)] if e is not None]
            accepted = self._accept(events)
            if not accepted or not self._done:
                if self._sub.overflowed:
                    raise SlowConsumerError(f"subscriber of run {self.run_id} fell behind; reconnect to resume")
                self._done = True  # the feed failed: end so the client reconnects and replays
            return accepted
        return self._accept([e for e in raw if e is not None])

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> RunEvent:
        while not self._pending:
            self._pending = await self.next_batch()
        return self._pending.pop(0)

    async def aclose(self) -> None:
        """Leave the feed; the last subscriber to leave stops the run's reader."""
        feed = self._feed
        feed.subscribers.discard(self._sub)
        if not feed.subscribers and not feed.task.done():
            feed.task.cancel()
            _forget(feed)


def subscribe(run_id: str, after: str | None = None) -> Subscription:
    """Every event of the run after `after` (or from the start), once each, in order; then new
    ones as they are published, until a terminal event. `aclose()` frees the reader."""
    return Subscription(run_id, after)
