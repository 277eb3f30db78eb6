"""build_sse_response / sse_stream with any async iterator of events (the contract's generic input)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agent_patterns.runs.events import RunEvent
from agent_patterns.streaming.sse import build_sse_response, sse_stream

RUN = "6c1f6bb4-38a4-4c47-8d35-2a3b5d2e1f00"


async def test_a_plain_generator_streams_with_heartbeats_and_ends_at_complete() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[RunEvent]:
        try:
            yield RunEvent("1-0", "running", RUN, {"i": 1})
            await asyncio.sleep(0.35)  # silence: heartbeats while this read is pending
            yield RunEvent("2-0", "complete", RUN, {"pages_crawled": 1})
            yield RunEvent("3-0", "running", RUN, {})  # never sent: the stream ended
        finally:
            closed.set()

    chunks = [c async for c in sse_stream(source(), RUN, heartbeat_interval=0.1, retry_ms=500)]
    assert chunks[0] == "retry: 500\n\n"
    assert chunks[1] == f'id: 1-0\ndata: {{"type":"running","run_id":"{RUN}","payload":{{"i":1}}}}\n\n'
    beats = [c for c in chunks if '"heartbeat"' in c]
    assert len(beats) >= 2 and all(not b.startswith("id:") for b in beats)
    assert chunks[-1].startswith("id: 2-0\n") and '"complete"' in chunks[-1]
    assert closed.is_set()


async def test_a_stream_ends_after_its_maximum_duration() -> None:
    async def never() -> AsyncIterator[RunEvent]:
        await asyncio.sleep(3600)
        yield RunEvent("1-0", "running", RUN, {})

    started = asyncio.get_running_loop().time()
    chunks = [c async for c in sse_stream(never(), RUN, heartbeat_interval=0.1, max_duration=0.35)]
    assert 0.3 < asyncio.get_running_loop().time() - started < 1.0
    assert chunks[0].startswith("retry:") and all('"heartbeat"' in c for c in chunks[1:])


def test_the_response_has_the_sse_headers() -> None:
    async def empty() -> AsyncIterator[RunEvent]:
        return
        yield

    response = build_sse_response(empty(), RUN)
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
