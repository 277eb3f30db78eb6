"""streaming function over real HTTP (uvicorn) against the embedded Redis."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from agent_patterns.config import reset_settings
from agent_patterns.runs import events
from agent_patterns.streaming import feeds
from agent_patterns.tenancy import issue_stream_token, issue_token
from agent_patterns_dev.gateway import load_function
from tests.conftest import LiveServer


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(load_function("streaming").app) as live:
        yield live


@pytest.fixture
def fast_heartbeats(settings_env: pytest.MonkeyPatch) -> None:
    settings_env.setenv("SSE_HEARTBEAT_SECONDS", "0.3")
    reset_settings()


@dataclass
class Message:
    id: str | None = None
    data: dict[str, Any] | None = None
    retry: int | None = None
    raw: list[str] = field(default_factory=list)


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """Parse an SSE body into messages, as a browser would."""
    current = Message()
    async for line in response.aiter_lines():
        if line == "":
            if current.raw:
                yield current
            current = Message()
            continue
        current.raw.append(line)
        name, _, value = line.partition(": ")
        if name == "id":
            current.id = value
        elif name == "data":
            current.data = json.loads(value)
        elif name == "retry":
            current.retry = int(value)


def url(server: LiveServer, run_id: str, token: str) -> str:
    return f"{server.url}/v1/runs/{run_id}/events?token={token}"


async def new_run(tenant: str = "acme") -> tuple[str, str]:
    run_id = await events.create_run(tenant, "crawl")
    return run_id, issue_stream_token(tenant, run_id)


async def test_exact_wire_format_and_headers(server: LiveServer) -> None:
    run_id, token = await new_run()
    running = await events.publish(run_id, "running", {"url": "https://a.example/", "pages_crawled": 1, "max_pages": 5})
    done = await events.publish(run_id, "complete", {"pages_crawled": 1})
    queued = (await events.replay(run_id))[0].id
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url(server, run_id, token))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    expected = (
        "retry: 2000\n\n"
        f'id: {queued}\ndata: {{"type":"queued","run_id":"{run_id}","payload":{{"kind":"crawl"}}}}\n\n'
        f'id: {running}\ndata: {{"type":"running","run_id":"{run_id}","payload":'
        '{"url":"https://a.example/","pages_crawled":1,"max_pages":5}}\n\n'
        f'id: {done}\ndata: {{"type":"complete","run_id":"{run_id}","payload":{{"pages_crawled":1}}}}\n\n'
    )
    assert response.text == expected


async def test_heartbeats_on_silence_then_events_then_end(server: LiveServer, fast_heartbeats: None) -> None:
    run_id, token = await new_run()
    got: list[Message] = []
    async with httpx.AsyncClient(timeout=10) as client, client.stream("GET", url(server, run_id, token)) as response:
        async for message in messages(response):
            got.append(message)
            beats = [m for m in got if m.data and m.data["type"] == "heartbeat"]
            if len(beats) == 2 and not any(m.data and m.data["type"] == "complete" for m in got):
                await events.publish(run_id, "complete", {})
    types = [m.data["type"] for m in got if m.data]
    assert types[0] == "queued" and types[-1] == "complete"
    assert types.count("heartbeat") >= 2
    heartbeat = next(m for m in got if m.data and m.data["type"] == "heartbeat")
    assert heartbeat.id is None  # heartbeats never move the client's Last-Event-ID
    assert heartbeat.data == {"type": "heartbeat", "run_id": run_id, "payload": {}}


@pytest.mark.parametrize("how", ["header", "query"])
async def test_replay_from_last_event_id(server: LiveServer, how: str) -> None:
    run_id, token = await new_run()
    ids = [await events.publish(run_id, "running", {"i": i}) for i in range(10)]
    await events.publish(run_id, "complete", {})
    async with httpx.AsyncClient(timeout=10) as client:
        if how == "header":
            response = await client.get(url(server, run_id, token), headers={"Last-Event-ID": ids[5]})
        else:
            response = await client.get(url(server, run_id, token) + f"&lastEventId={ids[5]}")
    got = [m async for m in messages(response)]
    payloads = [m.data["payload"].get("i") for m in got if m.data]
    assert payloads == [6, 7, 8, 9, None]


async def test_clients_joining_while_events_are_published_get_each_event_once(server: LiveServer) -> None:
    run_id, token = await new_run()
    total = 300

    async def publisher() -> None:
        for i in range(total):
            await events.publish(run_id, "running", {"i": i})
            if i % 10 == 0:
                await asyncio.sleep(0.005)
        await events.publish(run_id, "complete", {})

    async def client(delay: float) -> list[int]:
        await asyncio.sleep(delay)
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.get(url(server, run_id, token))
        return [
            m.data["payload"]["i"]
            for m in [m async for m in messages(response)]
            if m.data and m.data["type"] == "running"
        ]

    results = await asyncio.gather(publisher(), *(client(random.uniform(0, 0.4)) for _ in range(12)))
    for received in results[1:]:
        assert received == list(range(total))


async def test_a_thousand_events_survive_forced_disconnects(server: LiveServer) -> None:
    run_id, token = await new_run()
    total = 1000

    async def publisher() -> None:
        for i in range(total):
            await events.publish(run_id, "running", {"i": i})
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        await events.publish(run_id, "complete", {"n": total})

    async def reconnecting_client() -> tuple[list[int], int]:
        received: list[int] = []
        last_id: str | None = None
        connections = 0
        async with httpx.AsyncClient(timeout=30) as http:
            while True:
                connections += 1
                headers = {"Last-Event-ID": last_id} if last_id else {}
                cut_after = random.randint(20, 150)
                async with http.stream("GET", url(server, run_id, token), headers=headers) as response:
                    if response.status_code == 204:
                        return received, connections
                    n = 0
                    async for m in messages(response):
                        if m.id:
                            last_id = m.id
                        if m.data and m.data["type"] == "running":
                            received.append(m.data["payload"]["i"])
                        if m.data and m.data["type"] == "complete":
                            return received, connections
                        n += 1
                        if n >= cut_after:
                            break  # drop the connection mid-stream

    (_, (received, connections)) = await asyncio.gather(publisher(), reconnecting_client())
    assert connections > 5
    assert received == list(range(total))


async def test_stream_ends_after_complete_and_a_finished_run_answers_204(server: LiveServer) -> None:
    run_id, token = await new_run()
    first = await events.publish(run_id, "running", {"i": 1})
    last = await events.publish(run_id, "error", {"message": "login failed"})
    async with httpx.AsyncClient(timeout=10) as client:
        full = await client.get(url(server, run_id, token))
        assert [m.data["type"] for m in [m async for m in messages(full)] if m.data] == ["queued", "running", "error"]
        rest = await client.get(url(server, run_id, token), headers={"Last-Event-ID": first})
        assert [m.id for m in [m async for m in messages(rest)]][-1] == last
        nothing_left = await client.get(url(server, run_id, token), headers={"Last-Event-ID": last})
        assert nothing_left.status_code == 204 and nothing_left.text == ""


async def test_access_rules(server: LiveServer) -> None:
    run_id, token = await new_run("acme")
    other_run, _ = await new_run("acme")
    async with httpx.AsyncClient(timeout=10) as client:
        base = f"{server.url}/v1/runs/{run_id}/events"
        assert (await client.get(base)).status_code == 401
        expired = issue_stream_token("acme", run_id, ttl_seconds=-5)
        response = await client.get(f"{base}?token={expired}")
        assert response.status_code == 401 and "expired" in response.json()["error"]["message"]
        assert (await client.get(f"{base}?token=garbage")).status_code == 401
        wrong_run = issue_stream_token("acme", other_run)
        assert (await client.get(f"{base}?token={wrong_run}")).status_code == 403
        other_tenant = issue_stream_token("globex", run_id)
        assert (await client.get(f"{base}?token={other_tenant}")).status_code == 403
        globex_bearer = {"Authorization": f"Bearer {issue_token('globex')}"}
        assert (await client.get(base, headers=globex_bearer)).status_code == 403
        unknown = str(uuid.uuid4())
        unknown_token = issue_stream_token("acme", unknown)
        response = await client.get(f"{server.url}/v1/runs/{unknown}/events?token={unknown_token}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
        await events.publish(run_id, "complete", {})
        acme_bearer = {"Authorization": f"Bearer {issue_token('acme')}"}
        assert (await client.get(base, headers=acme_bearer)).status_code == 200
        assert (await client.get(f"{base}?token={token}")).status_code == 200


async def test_disconnect_frees_the_reader_at_once(server: LiveServer) -> None:
    run_id, token = await new_run()
    async with httpx.AsyncClient(timeout=10) as client, client.stream("GET", url(server, run_id, token)) as response:
        async for m in messages(response):
            if m.data:
                break
        assert feeds.active_feeds().get(run_id) == 1
    deadline = time.monotonic() + 3
    while run_id in feeds.active_feeds() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert run_id not in feeds.active_feeds()


async def test_many_clients_of_one_run_share_one_reader(server: LiveServer) -> None:
    run_id, token = await new_run()
    async with httpx.AsyncClient(timeout=10) as client:
        streams = [client.stream("GET", url(server, run_id, token)) for _ in range(20)]
        responses = [await s.__aenter__() for s in streams]
        readers = [messages(r) for r in responses]  # kept open: closing one would hang up
        for reader in readers:
            while (await anext(reader)).data is None:
                pass
        assert feeds.active_feeds()[run_id] == 20  # twenty subscribers, one XREAD loop
        for s in streams:
            await s.__aexit__(None, None, None)


async def test_streams_end_cleanly_before_the_function_timeout(
    server: LiveServer, settings_env: pytest.MonkeyPatch
) -> None:
    settings_env.setenv("SSE_MAX_STREAM_SECONDS", "0.8")
    settings_env.setenv("SSE_HEARTBEAT_SECONDS", "0.2")
    reset_settings()
    run_id, token = await new_run()
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url(server, run_id, token))
    assert response.status_code == 200
    assert 0.7 < time.monotonic() - started < 3
    assert [m.data["type"] for m in [m async for m in messages(response)] if m.data][0] == "queued"


async def test_a_slow_subscriber_is_cut_off_with_bounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds, "SUBSCRIBER_QUEUE_SIZE", 50)
    run_id, _ = await new_run()
    stream = feeds.subscribe(run_id)
    assert (await anext(stream)).type == "queued"
    for i in range(200):  # the subscriber reads nothing meanwhile
        last = await events.publish(run_id, "running", {"i": i})
    feed = feeds.feed_of(run_id)
    assert feed is not None
    deadline = time.monotonic() + 10
    while feed.cursor != last:  # wait until the reader has offered every event, however long it takes
        assert time.monotonic() < deadline, "the run's reader never caught up"
        await asyncio.sleep(0.02)
    assert all(sub.queue.qsize() <= 50 for sub in feed.subscribers)
    received: list[int] = []
    with pytest.raises(feeds.SlowConsumerError):
        async with asyncio.timeout(10):  # a subscriber that is never cut off fails here, not hangs
            async for event in stream:
                received.append(event.payload["i"])
    assert received == list(range(len(received))) and len(received) < 200  # what it got is in order, not all
    # It resumes from Redis without loss: everything is still there to replay.
    resumed = [e.payload["i"] for e in await events.replay(run_id, after=None) if e.type == "running"]
    assert resumed == list(range(200))


async def test_on_aws_a_bearer_token_is_checked_against_the_identity_provider(
    server: LiveServer, identity_provider: Any
) -> None:
    run_id, stream_token = await new_run("acme")
    await events.publish(run_id, "complete", {})
    base = f"{server.url}/v1/runs/{run_id}/events"
    async with httpx.AsyncClient(timeout=10) as client:
        ok = await client.get(base, headers={"Authorization": f"Bearer {identity_provider('acme')}"})
        assert ok.status_code == 200 and "complete" in ok.text
        other = await client.get(base, headers={"Authorization": f"Bearer {identity_provider('globex')}"})
        assert other.status_code == 403
        for bad in (
            identity_provider("acme", issuer_override="https://evil.example"),
            identity_provider("acme", audience="someone-else"),
            issue_token("acme"),
        ):  # a locally signed token is no identity on AWS
            assert (await client.get(base, headers={"Authorization": f"Bearer {bad}"})).status_code == 401
        assert (await client.get(f"{base}?token={stream_token}")).status_code == 200


async def test_concurrent_first_subscribers_share_a_single_reader() -> None:
    run_id, _ = await new_run()
    streams = [feeds.subscribe(run_id) for _ in range(50)]
    firsts = await asyncio.gather(*(anext(s) for s in streams))
    assert {e.type for e in firsts} == {"queued"}
    readers = [t for t in asyncio.all_tasks() if t.get_name() == "run-feeds" and not t.done()]
    assert len(readers) == 1 and feeds.active_feeds()[run_id] == 50
    await events.publish(run_id, "complete", {})
    lasts = await asyncio.gather(*(anext(s) for s in streams))
    assert {e.type for e in lasts} == {"complete"}
    for s in streams:
        await s.aclose()
