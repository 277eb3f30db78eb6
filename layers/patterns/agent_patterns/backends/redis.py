"""The Redis client: one per execution environment, health-checked so a thawed environment recovers."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from agent_patterns.config import get_settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

# One client per event loop: Lambda has one loop per environment; tests and the dev server may
# run several (each in its own thread), and a client must never be shared across loops.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis] = weakref.WeakKeyDictionary()


def redis_url() -> str:
    """REDIS_URL, or the secret REDIS_URL_SECRET_ARN names."""
    return get_settings().url_for("redis")


def _build(url: str) -> Redis:
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.exceptions import ConnectionError, TimeoutError

    settings = get_settings()
    tcp = {} if url.startswith("unix://") else {"socket_keepalive": True}
    # A blocking pool: past max_connections a command waits for a free connection (up to the
    # socket timeout) instead of failing with "Too many connections" under a burst.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_socket_timeout,
        decode_responses=True,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_connect_timeout,
        # A PING before reusing a connection idle this long: stale sockets after a freeze are
        # found and replaced before a real command fails on them.
        health_check_interval=settings.redis_health_check_interval,
        retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.5), retries=2),
        retry_on_error=[ConnectionError, TimeoutError],
        client_name="agent-patterns",
        **tcp,
    )
    return Redis.from_pool(pool)


def get_redis() -> Redis:
    """The environment's client, bound to the running event loop (a new loop gets a new client)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = _build(redis_url())
    return client


def current_client() -> Redis | None:
    """This loop's client if one was made (closing it must not create one)."""
    return _clients.get(asyncio.get_running_loop())


def is_redis_unavailable(exc: BaseException) -> bool:
    """Redis unreachable or failing (checked without importing redis at module load)."""
    import asyncio as _asyncio

    from redis.exceptions import RedisError

    return isinstance(exc, RedisError | OSError | _asyncio.TimeoutError)


async def on_redis_outage[T](what: str, operation: Awaitable[T], fallback: T) -> T:
    """Await a best-effort Redis operation (cache reads, breaker checks): during an outage log
    it and return `fallback`; any other error raises."""
    try:
        return await operation
    except Exception as exc:
        if not is_redis_unavailable(exc):
            raise
        from agent_patterns.observability import logger

        logger.warning(f"{what} skipped: Redis unavailable", extra={"error": str(exc)})
        return fallback


class tolerate_redis_outage:
    """`with tolerate_redis_outage("what"):` — best-effort Redis work (cache writes, lock
    releases, breaker bookkeeping): an outage is logged and skipped, any other error raises."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        if exc is None or not is_redis_unavailable(exc):
            return False
        from agent_patterns.observability import logger

        logger.warning(f"{self.what} skipped: Redis unavailable", extra={"error": str(exc)})
        return True


class LuaScript:
    """A Lua script run by its SHA (EVALSHA: a few bytes per call instead of the whole text),
    loaded on first use and again after a Redis restart flushed the script cache."""

    def __init__(self, text: str) -> None:
        import hashlib

        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: list[str], args: list[object]) -> Any:
        from redis.exceptions import NoScriptError

        redis = get_redis()
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[arg-type]
        except NoScriptError:
            return await redis.eval(self.text, len(keys), *keys, *args)  # type: ignore[arg-type]


def reset_redis() -> None:
    """Forget the clients (a SnapStart restore, new settings): the next command makes a new one.
    Each forgotten client is closed on its own loop (`backends.loops`); after a restore its
    sockets are dead, and closing them only gives the file descriptors back."""
    from agent_patterns.backends.loops import close_on_loop

    dropped = list(_clients.items())
    _clients.clear()
    for loop, client in dropped:
        close_on_loop(loop, _close(client))


async def _close(client: Redis) -> None:
    import contextlib

    with contextlib.suppress(Exception):  # a dead connection closes all the same
        await client.aclose()
