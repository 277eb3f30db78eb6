"""The multiplexed run reader: one process follows many live runs on a handful of connections."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from agent_patterns.backends import get_redis
from agent_patterns.config import reset_settings
from agent_patterns.runs import events
from agent_patterns.streaming import feeds


async def _collect(stream: feeds.Subscription) -> list[tuple[str, int | None]]:
    got: list[tuple[str, int | None]] = []
    try:
        async for event in stream:
            got.append((event.type, event.payload.get("i")))
    finally:
        await stream.aclose()
    return got


async def test_one_process_follows_many_more_runs_than_it_has_connections(
    settings_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_env.setenv("REDIS_MAX_CONNECTIONS", "6")  # one blocking read per run would need 300
    reset_settings()
    monkeypatch.setattr(feeds, "FEEDS_PER_READER", 100)
    runs = [str(uuid.uuid4()) for _ in range(300)]
    for run_id in runs:
        await events.publish(run_id, "queued", {})
    streams = [feeds.subscribe(run_id) for run_id in runs]
    consumers = [asyncio.create_task(_collect(s)) for s in streams]

    def readers() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "run-feeds" and not t.done()]

    for _ in range(100):  # every feed first replays its run over the 6 connections: give it time
        if len(readers()) >= 3:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # and no more readers come after
    assert len(readers()) == 3  # 300 runs, 100 per blocking read
    for i in range(5):  # every run gets events while all of them are followed
        await asyncio.gather(*(events.publish(run_id, "running", {"i": i}) for run_id in runs))
    await asyncio.gather(*(events.publish(run_id, "complete", {}) for run_id in runs))
    async with asyncio.timeout(60):
        results = await asyncio.gather(*consumers)
    expected = [("queued", None), *(("running", i) for i in range(5)), ("complete", None)]
    assert all(got == expected for got in results), [got for got in results if got != expected][:2]
    assert not any(run_id in feeds.active_feeds() for run_id in runs)  # every feed left with its run


async def test_a_run_joining_while_the_reader_blocks_wakes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds, "FEED_BLOCK_MS", 120_000)  # without a wake-up, B would wait this long
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    for run_id in (first, second):
        await events.publish(run_id, "queued", {})
    a = feeds.subscribe(first)
    assert (await anext(a)).type == "queued"
    await asyncio.sleep(0.2)  # the reader is now blocked on A's stream alone
    b = feeds.subscribe(second)
    assert (await anext(b)).type == "queued"  # replayed
    feed = feeds.feed_of(second)
    assert feed is not None
    await feed.ready.wait()
    await asyncio.sleep(0.2)
    await events.publish(second, "complete", {})
    async with asyncio.timeout(10):
        assert (await anext(b)).type == "complete"
    await a.aclose()
    await b.aclose()


async def test_a_failed_read_ends_every_stream_so_clients_resume_from_redis() -> None:
    runs = [str(uuid.uuid4()) for _ in range(3)]
    for run_id in runs:
        await events.publish(run_id, "queued", {})
    streams = [feeds.subscribe(run_id) for run_id in runs]
    for s in streams:
        assert (await anext(s)).type == "queued"
    await asyncio.sleep(0.2)
    for reader in feeds._hub().readers:
        reader.wake_key = "not-a-stream"
    await get_redis().set("not-a-stream", "x")  # the next read fails with WRONGTYPE
    try:
        await events.publish(runs[0], "running", {"i": 0})
        async with asyncio.timeout(10):
            for s in streams:
                with pytest.raises(StopAsyncIteration):
                    while True:
                        await anext(s)
    finally:
        await get_redis().delete("not-a-stream")
    assert not any(run_id in feeds.active_feeds() for run_id in runs)


async def test_a_followed_run_whose_worker_died_ends_with_an_error(
    settings_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_env.setenv("RUN_QUEUED_LEASE_SECONDS", "1")  # queued, and no worker ever takes it
    reset_settings()
    monkeypatch.setattr(feeds, "REAP_EVERY_S", 0.2)
    run_id = await events.create_run("acme", "crawl", {})
    stream = feeds.subscribe(run_id)
    got = []
    async with asyncio.timeout(15):  # without the streaming side's sweep this waits forever
        async for event in stream:
            got.append(event)
    assert [e.type for e in got] == ["queued", "error"]
    assert got[-1].payload["reason"] == "abandoned"
