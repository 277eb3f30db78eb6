"""Server-Sent Events for run streams: the wire format, heartbeats, and a bounded lifetime.

Wire format (ARCHITECTURE.md): a `retry:` hint first, then per event `id: <event id>` and one
`data:` line of `{"type","run_id","payload"}` JSON, then a blank line. Heartbeats carry no
`id:` line, so a browser's Last-Event-ID always names a real event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

from agent_patterns.runs.events import RunEvent

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def format_event(event: RunEvent) -> str:
    return f"id: {event.id}\ndata: {event.wire}\n\n"


def format_heartbeat(run_id: str) -> str:
    body = json.dumps({"type": "heartbeat", "run_id": run_id, "payload": {}}, separators=(",", ":"))
    return f"data: {body}\n\n"


class _OneByOne:
    """Gives any async iterator of events the batch interface of feeds.Subscription. The read in
    progress is kept across heartbeat timeouts: nothing is cancelled mid-read."""

    def __init__(self, events: AsyncIterator[RunEvent]) -> None:
        self._iterator = aiter(events)
        self._pending: asyncio.Future[RunEvent] | None = None

    async def next_batch(self, wait: float | None = None) -> list[RunEvent]:
        if self._pending is None:
            self._pending = asyncio.ensure_future(anext(self._iterator))
        done, _ = await asyncio.wait({self._pending}, timeout=wait)
        if not done:
            return []
        pending, self._pending = self._pending, None
        return [pending.result()]  # StopAsyncIteration ends the stream

    async def aclose(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(BaseException):
                await self._pending
        closer = getattr(self._iterator, "aclose", None)
        if closer is not None:
            await closer()


async def sse_stream(
    events: AsyncIterator[RunEvent],
    run_id: str,
    heartbeat_interval: float = 15,
    max_duration: float | None = None,
    retry_ms: int = 2000,
) -> AsyncIterator[str]:
    """The SSE text of `events`, with heartbeats on silence; ends after a terminal event, when
    `events` ends, or after `max_duration` seconds (a clean close the client resumes from).

    Sources that hand over every ready event at once (feeds.Subscription) get one write per
    batch and heartbeats from a cheap queue timeout; any other async iterator is adapted."""
    deadline = None if max_duration is None else time.monotonic() + max_duration
    source: Any = events if hasattr(events, "next_batch") else _OneByOne(events)
    yield f"retry: {retry_ms}\n\n"
    try:
        while True:
            wait = heartbeat_interval
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return
            try:
                batch = await source.next_batch(wait)
            except StopAsyncIteration:
                return
            if not batch:
                if deadline is None or time.monotonic() < deadline:
                    yield format_heartbeat(run_id)
                continue
            yield "".join(format_event(e) for e in batch)
            if batch[-1].terminal:
                return
    finally:
        await source.aclose()


def build_sse_response(
    event_generator: AsyncIterator[RunEvent],
    run_id: str,
    heartbeat_interval: float = 15,
    *,
    max_duration: float | None = None,
    retry_ms: int = 2000,
) -> StreamingResponse:
    """A streaming response of a run's events in the SSE wire format."""
    return StreamingResponse(
        sse_stream(event_generator, run_id, heartbeat_interval, max_duration, retry_ms),
        headers=SSE_HEADERS,  # set directly: media_type would append "; charset=utf-8"
    )
