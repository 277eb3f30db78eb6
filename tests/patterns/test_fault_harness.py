"""The fault-injection harness (tests/fault_proxy.py, tests/redis_process.py), checked with a real
redis-py asyncio client through the proxy to a real redis-server: each fault does what the
spend-control tests will rely on."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, TimeoutError

from tests.fault_proxy import FaultProxy
from tests.redis_process import Persistence, RedisProcess

KEY = "harness:counter"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    with RedisProcess("none", dir=tmp_path / "redis") as process:
        yield process


@pytest.fixture
def proxy(server: RedisProcess) -> Iterator[FaultProxy]:
    with FaultProxy(server.host, server.port, seed=7) as fault_proxy:
        yield fault_proxy
    assert fault_proxy.errors == []


@asynccontextmanager
async def connect(port: int, retries: int | None, socket_timeout: float = 2.0) -> AsyncIterator[Redis]:
    """A plain redis-py client; `retries=None` keeps redis-py's default Retry (10 retries)."""
    options: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": 2.0}
    if retries is not None:
        options["retry"] = Retry(NoBackoff(), retries)
    client = Redis(host="127.0.0.1", port=port, **options)
    try:
        yield client
    finally:
        await client.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def incr(client: Redis) -> int:
    return await client.incr(KEY)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fault-proxy")]


async def test_a_dropped_reply_means_redis_ran_the_command_but_the_client_saw_a_connection_error(
    proxy: FaultProxy, server: RedisProcess
) -> None:
    proxy.drop_reply_after_execution(b"INCR", times=1)
    async with connect(proxy.port, retries=0) as client, connect(server.port, retries=0) as direct:
        with pytest.raises(ConnectionError):
            await client.incr(KEY)
        assert await direct.get(KEY) == b"1"  # executed once, although the client got an error
        assert proxy.dropped == 1
        assert await client.incr(KEY) == 2  # times=1: the next one goes through


@pytest.mark.parametrize("retries", [1, None], ids=["Retry(NoBackoff(), 1)", "default-retry"])
async def test_a_retried_incr_whose_reply_was_dropped_is_applied_twice(
    proxy: FaultProxy, server: RedisProcess, retries: int | None
) -> None:
    """The double counting spend control must prevent: redis-py retries on ConnectionError."""
    proxy.drop_reply_after_execution(b"INCR", times=1)
    async with connect(proxy.port, retries=retries) as client, connect(server.port, retries=0) as direct:
        assert await client.incr(KEY) == 2  # no error reaches the caller...
        assert await direct.get(KEY) == b"2"  # ...but Redis counted it twice
    assert proxy.dropped == 1
    assert proxy.stats.accepted == 2  # the retry came on a new connection


async def test_a_rule_fires_as_many_times_as_asked_and_not_at_probability_zero(
    proxy: FaultProxy, server: RedisProcess
) -> None:
    proxy.drop_reply_after_execution(lambda chunk: b"INCR" in chunk and KEY.encode() in chunk, times=2)
    async with connect(proxy.port, retries=3) as client, connect(server.port, retries=0) as direct:
        assert await client.incr(KEY) == 3  # two dropped replies, two retries: three increments
        assert proxy.dropped == 2
        proxy.drop_reply_after_execution(b"INCR", probability=0.0)
        assert await client.incr(KEY) == 4
        assert await direct.get(KEY) == b"4"
    assert proxy.dropped == 2


async def test_a_retried_evalsha_whose_reply_was_dropped_runs_the_script_twice(
    proxy: FaultProxy, server: RedisProcess
) -> None:
    lua = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    async with connect(proxy.port, retries=1) as client, connect(server.port, retries=0) as direct:
        sha = await direct.script_load(lua)  # loaded first, so the first EVALSHA is not a NOSCRIPT
        proxy.drop_reply_after_execution(sha.encode(), times=1)  # match the script by its sha
        assert await client.register_script(lua)(keys=[KEY], args=[5]) == 10
        assert await direct.get(KEY) == b"10"
    assert proxy.dropped == 1


async def test_a_request_reset_midway_never_runs(proxy: FaultProxy, server: RedisProcess) -> None:
    async with connect(server.port, retries=0) as direct:
        await direct.set(KEY, 10)
        proxy.reset_mid_request(b"INCRBY", times=1)
        async with connect(proxy.port, retries=0) as client:
            with pytest.raises(ConnectionError):
                await client.incrby(KEY, 5)
        assert await direct.get(KEY) == b"10"  # the server never got the whole command
        assert proxy.resets == 1
        proxy.reset_mid_request(b"INCRBY", times=1)
        async with connect(proxy.port, retries=1) as client:
            assert await client.incrby(KEY, 5) == 15  # so retrying it applies it once
        assert await direct.get(KEY) == b"15"
        assert proxy.resets == 2


async def test_refuse_fails_commands_fast_and_restore_recovers(proxy: FaultProxy, server: RedisProcess) -> None:
    async with connect(proxy.port, retries=1) as client, connect(server.port, retries=0) as direct:
        assert await client.incr(KEY) == 1
        proxy.refuse()
        assert proxy.stats.active == 0  # the live connection was cut
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await client.incr(KEY)
        async with connect(proxy.port, retries=0) as fresh:
            with pytest.raises(ConnectionError):
                await fresh.ping()
        assert time.monotonic() - started < 1.0  # not a hang until the 2 s socket timeout
        assert proxy.stats.refused >= 2
        assert await direct.get(KEY) == b"1"
        proxy.restore()
        assert await client.incr(KEY) == 2


async def test_blackhole_hangs_requests_and_restore_delivers_what_was_held(
    proxy: FaultProxy, server: RedisProcess
) -> None:
    async with connect(proxy.port, retries=0, socket_timeout=0.3) as client, connect(server.port, 0) as direct:
        assert await client.ping()
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.incr(KEY)
        assert time.monotonic() - started >= 0.25
        assert await direct.get(KEY) is None  # nothing reached the server
        proxy.restore()

        async def held_incr_ran() -> bool:
            return await direct.get(KEY) == b"1"

        await eventually(held_incr_ran)  # the request the client gave up on still ran, as after a real partition
        assert await client.incr(KEY) == 2


async def test_cut_all_closes_live_connections_and_drops_what_was_held(proxy: FaultProxy, server: RedisProcess) -> None:
    async with connect(proxy.port, retries=0) as client, connect(server.port, retries=0) as direct:
        assert await client.ping()
        proxy.blackhole()
        in_flight = asyncio.create_task(incr(client))

        async def request_held() -> bool:
            return proxy.stats.active == 1 and not in_flight.done()

        await eventually(request_held)
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert proxy.cut_all() == 1
        with pytest.raises(ConnectionError):
            await in_flight
        assert time.monotonic() - started < 1.0  # the cut, not the 2 s socket timeout
        proxy.restore()
        assert await client.ping()  # redis-py reconnects
        assert proxy.stats.accepted == 2
        assert await direct.get(KEY) is None  # the held INCR was lost with the connection


@pytest.mark.parametrize(
    ("persistence", "kill", "survives"),
    [("none", True, False), ("none", False, False), ("aof", True, True), ("aof", False, True)],
)
async def test_a_restart_keeps_acknowledged_writes_only_with_aof(
    tmp_path: Path, persistence: Persistence, kill: bool, survives: bool
) -> None:
    with RedisProcess(persistence, dir=tmp_path / "redis") as server:
        async with connect(server.port, retries=0) as client:
            await client.set(KEY, "acknowledged")
        pid, port = server.pid, server.port
        assert pid is not None
        server.restart(kill=kill)
        assert server.port == port
        assert server.pid != pid
        assert not pid_alive(pid)
        async with connect(server.port, retries=0) as client:
            assert await client.get(KEY) == (b"acknowledged" if survives else None)


async def test_closing_stops_the_proxy_thread_and_the_redis_process(tmp_path: Path) -> None:
    with RedisProcess("none", dir=tmp_path / "redis") as server, FaultProxy(server.host, server.port) as proxy:
        pid, thread = server.pid, proxy.thread
        assert pid is not None and thread is not None
        assert thread in threading.enumerate()
        async with connect(proxy.port, retries=0) as client:
            await client.set(KEY, 1)  # a live connection...
            proxy.blackhole()
            in_flight = asyncio.create_task(incr(client))  # ...and a request held in the proxy
            await asyncio.sleep(0.05)
            proxy.close()
            with pytest.raises(ConnectionError):
                await in_flight
    assert not thread.is_alive()
    assert proxy_threads() == []
    assert not pid_alive(pid)
    assert proxy.errors == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()


def test_both_stop_when_the_test_fails_inside() -> None:
    pid: int | None = None
    folder: Path | None = None
    with (
        pytest.raises(RuntimeError, match="test failed"),
        RedisProcess("aof") as server,
        FaultProxy(server.host, server.port),
    ):
        pid, folder = server.pid, server.dir
        raise RuntimeError("test failed")
    assert pid is not None and not pid_alive(pid)
    assert folder is not None and not folder.exists()  # the temp dir it made is removed
    assert proxy_threads() == []
