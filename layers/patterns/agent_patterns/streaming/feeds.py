"""Fan-out of run events: every run followed in a process is read by one multiplexed reader.

A few blocking `XREAD`s per event loop cover the streams of all runs being followed (one
connection per FEEDS_PER_READER runs, not one per run), and each run's events go to all its
subscribers. A subscriber joins its run's feed first and replays from Redis second; events seen
by both are dropped by id, so there is no gap between replay and follow and no duplicate. A run
joining while the reader is blocked wakes it through a private wake stream (one `XADD`), so a
new run's first events are not held back by the block timeout. A subscriber too slow to keep
its bounded queue drained is cut off (it reconnects with Last-Event-ID and replays from Redis):
memory stays bounded and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import weakref
from typing import Any

from agent_patterns.runs.events import RunEvent, event_of, replay, stream_key
from agent_patterns.runs.records import parse_run_id

FEED_BLOCK_MS = 2000
REAP_EVERY_S = 15.0  # how often a process that follows runs sweeps for abandoned ones
FEED_COUNT = 500  # events per stream per read
FEEDS_PER_READER = 100  # runs per blocking read (and connection): 1,000 live runs use 10
SUBSCRIBER_QUEUE_SIZE = 2000
WAKE_TTL_S = 600


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
    """One run's place in the hub: its cursor and its subscribers."""

    def __init__(self, hub: _Hub, run_id: str) -> None:
        self.hub = hub
        self.run_id = run_id
        self.key = stream_key(run_id)
        self.cursor: str | None = None  # the stream's end when the feed started, then the last id read
        self.ready = asyncio.Event()  # set once the cursor is known (or the feed failed)
        self.subscribers: set[_Subscriber] = set()
        self.finished = False
        self.reader: _Reader | None = None
        self.starting = asyncio.create_task(self._start(), name=f"run-feed-start:{run_id}")

    async def _start(self) -> None:
        from agent_patterns.backends import get_redis

        try:
            last = await get_redis().xrevrange(self.key, count=1)
            self.cursor = str(last[0][0]) if last else "0-0"
        except Exception:
            self.hub.log_failure("run feed could not start", self.run_id)
            self.finish(failed=True)
            return
        self.ready.set()
        if not self.finished:
            await self.hub.joined(self)

    def deliver(self, event: RunEvent) -> None:
        self.cursor = event.id
        for sub in list(self.subscribers):
            sub.offer(event)
        if event.terminal:
            self.finish()

    def finish(self, *, failed: bool = False) -> None:
        """The run ended (or its reading failed): subscribers drain what they have, then end."""
        if failed:
            for sub in list(self.subscribers):  # subscribers end; clients reconnect and replay
                sub.offer(None)
        self.finished = True
        self.ready.set()
        self.hub.forget(self)


class _Reader:
    """One blocking XREAD over up to FEEDS_PER_READER runs, on one connection. Each read names
    every stream it follows, so Redis's cost per read grows with that number: shards keep it small."""

    def __init__(self, hub: _Hub) -> None:
        self.hub = hub
        self.feeds: dict[str, _Feed] = {}
        self.wake_key = f"runs:wake:{uuid.uuid4().hex}"
        self.wake_cursor = "0-0"
        self.task: asyncio.Task[None] | None = None
        self.blocked = False  # an XREAD is in flight: a joining feed must wake it
        self.woken = False  # one wake per read is enough, however many feeds join meanwhile

    async def add(self, feed: _Feed) -> None:
        self.feeds[feed.run_id] = feed
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._read(), name="run-feeds")
        elif self.blocked and not self.woken:
            self.woken = True
            from agent_patterns.backends import get_redis

            try:
                async with get_redis().pipeline(transaction=False) as pipe:
                    pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1, approximate=False)
                    pipe.expire(self.wake_key, WAKE_TTL_S)
                    await pipe.execute()
            except Exception:  # only latency is lost: the feed joins at the next read anyway
                _Hub.log_failure("could not wake the run reader", feed.run_id)

    def remove(self, feed: _Feed) -> None:
        if self.feeds.get(feed.run_id) is feed:
            del self.feeds[feed.run_id]
        task = self.task
        if not self.feeds and task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()  # nothing left to follow: free the connection now
            self.task = None

    async def _read(self) -> None:
        from agent_patterns.backends import get_redis

        redis = get_redis()
        try:
            while True:
                active = [f for f in self.feeds.values() if f.cursor is not None and not f.finished]
                if not active:
                    return
                self.hub.maybe_sweep()
                streams: dict[Any, Any] = {f.key: f.cursor for f in active}
                streams[self.wake_key] = self.wake_cursor
                self.blocked, self.woken = True, False
                try:
                    reply: list[tuple[str, list[tuple[str, dict[str, str]]]]] = await redis.xread(  # type: ignore[assignment]
                        streams, count=FEED_COUNT, block=FEED_BLOCK_MS
                    )
                finally:
                    self.blocked = False
                by_key = {f.key: f for f in active}
                for key, rows in reply or ():
                    if key == self.wake_key:
                        self.wake_cursor = rows[-1][0]
                        continue
                    feed = by_key[key]
                    for event_id, fields in rows:
                        if feed.finished:
                            break
                        feed.deliver(event_of(feed.run_id, event_id, fields))
        except asyncio.CancelledError:
            raise
        except Exception:
            _Hub.log_failure("run reader failed", None)
            for feed in list(self.feeds.values()):
                if feed.cursor is not None:
                    feed.finish(failed=True)
        finally:
            if self.task is asyncio.current_task():
                self.task = None
            if self.task is None and any(f.cursor is not None for f in self.feeds.values()):
                # feeds joined while this reader was ending: they need a reader of their own
                self.task = asyncio.get_running_loop().create_task(self._read(), name="run-feeds")


class _Hub:
    """All feeds of one event loop, spread over as few readers as FEEDS_PER_READER allows."""

    def __init__(self) -> None:
        self.next_sweep = 0.0
        self.feeds: dict[str, _Feed] = {}
        self.readers: list[_Reader] = []

    def feed(self, run_id: str) -> _Feed:
        feed = self.feeds.get(run_id)
        if feed is None or feed.finished:  # no await between the check and the registration
            feed = self.feeds[run_id] = _Feed(self, run_id)
        return feed

    async def joined(self, feed: _Feed) -> None:
        """A feed has its cursor: give it to a reader with room (or a new one)."""
        reader = next((r for r in self.readers if len(r.feeds) < FEEDS_PER_READER), None)
        if reader is None:
            reader = _Reader(self)
            self.readers.append(reader)
        feed.reader = reader
        await reader.add(feed)

    def forget(self, feed: _Feed) -> None:
        if self.feeds.get(feed.run_id) is feed:
            del self.feeds[feed.run_id]
        reader = feed.reader
        if reader is not None:
            reader.remove(feed)
            if not reader.feeds and reader.task is None and reader in self.readers:
                self.readers.remove(reader)

    def maybe_sweep(self) -> None:
        if time.monotonic() >= self.next_sweep:
            self.next_sweep = time.monotonic() + REAP_EVERY_S
            asyncio.create_task(_sweep(), name="run-reaper")  # noqa: RUF006 (it logs its own failure)

    @staticmethod
    def log_failure(message: str, run_id: str | None) -> None:
        from agent_patterns.observability import logger

        logger.exception(message, extra={"run_id": run_id})


async def _sweep() -> None:
    """Runs whose worker died end with an `error` event: their followers here stop waiting."""
    from agent_patterns.runs.leases import reap_expired_runs

    try:
        await reap_expired_runs()
    except Exception:
        _Hub.log_failure("sweep for abandoned runs failed", None)


_HUBS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Hub] = weakref.WeakKeyDictionary()


def _hub() -> _Hub:
    loop = asyncio.get_running_loop()
    hub = _HUBS.get(loop)
    if hub is None:
        hub = _HUBS[loop] = _Hub()
    return hub


def active_feeds() -> dict[str, int]:
    """Run id → subscriber count of the runs this process follows, over all its event loops
    (for health and tests)."""
    counts: dict[str, int] = {}
    for hub in list(_HUBS.values()):
        for run_id, feed in list(hub.feeds.items()):
            counts[run_id] = counts.get(run_id, 0) + len(feed.subscribers)
    return counts


def feed_of(run_id: str) -> _Feed | None:
    """The feed of a run followed in this event loop, if any."""
    return _hub().feeds.get(parse_run_id(run_id))


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
        self._feed = _hub().feed(self.run_id)
        self._feed.subscribers.add(self._sub)
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
        if not feed.subscribers and not feed.finished:
            feed.starting.cancel()
            feed.finish()


def subscribe(run_id: str, after: str | None = None) -> Subscription:
    """Every event of the run after `after` (or from the start), once each, in order; then new
    ones as they are published, until a terminal event. `aclose()` frees the reader."""
    return Subscription(run_id, after)
