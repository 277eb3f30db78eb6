"""The Postgres connection: one psycopg 3 async connection per execution environment.

Lambda serves one request at a time per environment, so a pool would only hold idle sockets;
the lock keeps concurrent users (the local dev server) from interleaving transactions.
`prepare_threshold=None` keeps statements unprepared, so RDS Proxy never pins the session.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from agent_patterns.config import get_settings
from agent_patterns.errors import BackendUnavailableError

if TYPE_CHECKING:
    from psycopg import AsyncConnection


class _Holder:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = asyncio.Lock()
        self.conn: AsyncConnection | None = None
        self.last_used = 0.0


_holders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Holder] = weakref.WeakKeyDictionary()


def database_url() -> str:
    """DATABASE_URL, or the secret DATABASE_URL_SECRET_ARN names."""
    return get_settings().url_for("postgres")


async def _connect() -> AsyncConnection:
    import psycopg
    from pgvector.psycopg import register_vector_async

    from agent_patterns.backends import migrations

    settings = get_settings()
    conn = await psycopg.AsyncConnection.connect(
        database_url(),
        autocommit=True,
        prepare_threshold=None,
        connect_timeout=settings.database_connect_timeout,
        application_name="agent-patterns",
    )
    try:
        await migrations.migrate_global(conn)
        await register_vector_async(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


def _closed_by_server(conn: AsyncConnection) -> bool:
    """An idle connection has nothing to read unless the server closed it (a restart, a
    failover, an idle timeout): one non-blocking poll of the socket, no round trip."""
    import select

    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


async def _alive(conn: AsyncConnection, idle: float) -> bool:
    if conn.closed or conn.broken or _closed_by_server(conn):
        return False
    if idle < get_settings().database_idle_check_seconds:
        return True
    try:  # after a long idle (a frozen environment) the socket may be dead: check cheaply
        await asyncio.wait_for(conn.execute("SELECT 1"), timeout=2)
        return True
    except Exception:
        return False


@asynccontextmanager
async def connection() -> AsyncIterator[AsyncConnection]:
    """The environment's connection (autocommit; use `db.transaction()` for atomic work).

    Connection failures surface as BackendUnavailableError (HTTP 503 with Retry-After); the
    next call reconnects, so the function recovers by itself when Postgres returns.
    """
    import psycopg

    loop = asyncio.get_running_loop()
    holder = _holders.get(loop)
    if holder is None:
        holder = _holders[loop] = _Holder(loop)
    async with holder.lock:
        try:
            if holder.conn is None or not await _alive(holder.conn, time.monotonic() - holder.last_used):
                if holder.conn is not None:
                    await holder.conn.close()
                holder.conn = None
                holder.conn = await _connect()
        except psycopg.OperationalError as exc:
            raise BackendUnavailableError(f"Postgres is unreachable: {_short(exc)}") from exc
        conn = holder.conn
        try:
            yield conn
        except psycopg.OperationalError as exc:
            if conn.broken or conn.closed:
                raise BackendUnavailableError(f"Postgres connection lost: {_short(exc)}") from exc
            raise
        finally:
            holder.last_used = time.monotonic()
            if not (conn.closed or conn.broken):
                from psycopg.pq import TransactionStatus

                if conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.rollback()


def database_key(db: AsyncConnection) -> str:
    """Which database a connection talks to: the key of per-database, per-environment caches."""
    info = db.info
    return f"{info.host}:{info.port}/{info.dbname}"


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def reset_postgres() -> None:
    """Forget the connections without using them (after a SnapStart restore their sockets are dead)."""
    _holders.clear()


async def close_postgres() -> None:
    """Close this loop's connection, if any."""
    holder = _holders.pop(asyncio.get_running_loop(), None)
    if holder is not None and holder.conn is not None:
        await holder.conn.close()
