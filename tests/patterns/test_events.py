"""Run event log: publish, replay after an id, follow; run records in the tenant schema."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from agent_patterns.backends import get_redis
from agent_patterns.config import get_settings
from agent_patterns.errors import BadRequestError, ValidationError
from agent_patterns.runs import events
from agent_patterns.runs.records import get_run


def new_run() -> str:
    return str(uuid.uuid4())


async def test_replay_returns_every_event_in_publish_order() -> None:
    run = new_run()
    ids = [await events.publish(run, "running", {"i": i}) for i in range(50)]
    got = await events.replay(run)
    assert [e.id for e in got] == ids
    assert [e.payload["i"] for e in got] == list(range(50))
    assert all(e.run_id == run and e.type == "running" for e in got)


async def test_replay_after_an_id_returns_exactly_the_later_events() -> None:
    run = new_run()
    ids = [await events.publish(run, "running", {"i": i}) for i in range(20)]
    for cut in (0, 7, 19):
        later = await events.replay(run, after=ids[cut])
        assert [e.id for e in later] == ids[cut + 1 :]


async def test_follow_delivers_events_published_while_following_once_each() -> None:
    run = new_run()
    first = await events.publish(run, "running", {"i": 0})

    async def producer() -> None:
        for i in range(1, 30):
            await events.publish(run, "running", {"i": i})
            if i % 5 == 0:
                await asyncio.sleep(0.01)
        await events.publish(run, "complete", {"pages": 29})

    seen: list[events.RunEvent] = []

    async def consumer() -> None:
        async for event in events.follow(run, block_ms=200):
            seen.append(event)

    await asyncio.gather(consumer(), producer())
    assert seen[0].id == first
    assert [e.payload.get("i") for e in seen[:-1]] == list(range(30))
    assert seen[-1].type == "complete"
    assert len({e.id for e in seen}) == len(seen)


async def test_follow_from_an_id_resumes_without_gap_or_duplicate() -> None:
    run = new_run()
    ids = [await events.publish(run, "running", {"i": i}) for i in range(10)]
    await events.publish(run, "error", {"message": "boom"})
    resumed = [e async for e in events.follow(run, after=ids[4], block_ms=100)]
    assert [e.payload.get("i") for e in resumed[:-1]] == list(range(5, 10))
    assert resumed[-1].type == "error"


async def test_streams_are_capped_and_expire() -> None:
    run = new_run()
    await events.publish(run, "running", {})
    ttl = await get_redis().ttl(events.stream_key(run))
    assert 0 < ttl <= get_settings().run_events_ttl_seconds
    pipe = get_redis().pipeline()
    for _ in range(get_settings().run_events_maxlen + 500):
        pipe.xadd(events.stream_key(run), {"type": "running", "payload": "{}"})
    await pipe.execute()
    await events.publish(run, "running", {})
    assert await get_redis().xlen(events.stream_key(run)) < get_settings().run_events_maxlen + 500


async def test_bad_ids_and_types_are_refused_before_redis() -> None:
    with pytest.raises(ValidationError, match="run id"):
        await events.publish("run:*", "running", {})
    run = new_run()
    with pytest.raises(ValidationError, match="event type"):
        await events.publish(run, "heartbeat", {})
    assert await get_redis().exists(events.stream_key(run), events.meta_key(run)) == 0  # nothing was written
    with pytest.raises(BadRequestError, match="event id"):
        await events.replay(new_run(), after="$")


async def test_create_run_records_a_queued_run_and_publishes_queued() -> None:
    run = await events.create_run("acme", "crawl", {"url": "https://example.com"})
    record = await get_run("acme", run)
    assert record is not None and record.status == "queued" and record.kind == "crawl"
    assert record.request == {"url": "https://example.com"}
    assert [e.type for e in await events.replay(run)] == ["queued"]
    assert await events.run_owner(run) == "acme"
    assert await get_run("globex", run) is None  # another tenant's schema has no such run


async def test_transition_updates_the_record_and_publishes_the_event() -> None:
    run = await events.create_run("acme", "crawl")
    await events.transition("acme", run, "running", {"pages_crawled": 1})
    await events.transition("acme", run, "complete", {"pages_crawled": 3}, result={"pages_crawled": 3})
    record = await get_run("acme", run)
    assert record is not None and record.status == "complete" and record.result == {"pages_crawled": 3}
    assert [e.type for e in await events.replay(run)] == ["queued", "running", "complete"]


async def test_nothing_is_appended_after_a_terminal_event() -> None:
    from agent_patterns.errors import RunEndedError

    run = new_run()
    await events.publish(run, "running", {"i": 1})
    done = await events.publish(run, "error", {"message": "cancelled by the user"})
    for late in ("running", "complete", "error"):  # a worker's progress racing a cancel, a second ending
        with pytest.raises(RunEndedError, match="already ended"):
            await events.publish(run, late, {})
    assert [e.id for e in await events.replay(run)][-1] == done
