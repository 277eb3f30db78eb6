"""SnapStart runtime hooks shared by the functions.

Before the snapshot a function imports what its first request would (nothing connects, nothing
unique is made); after a restore the sockets in the snapshot are dead, so the clients are
dropped (never used) and made anew, and the PRNG is reseeded so restored environments do not
share retry jitter. Lambda's Python runtime provides `snapshot_restore_py`; elsewhere
`register` does nothing.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Iterable

BACKEND_MODULES = ("redis.asyncio", "redis.asyncio.retry", "redis.backoff", "psycopg", "pgvector.psycopg")


def preload(modules: Iterable[str]) -> None:
    for module in modules:
        importlib.import_module(module)


def reset_after_restore(*more: Callable[[], None]) -> None:
    """Drop the Redis and Postgres clients (and whatever `more` resets), reseed the PRNG."""
    from agent_patterns.backends import reset_postgres, reset_redis

    reset_redis()
    reset_postgres()
    for reset in more:
        reset()
    random.seed()


def register(before_snapshot: Callable[[], None], after_restore: Callable[[], None]) -> bool:
    """Register the hooks with the Lambda runtime; False where there is no runtime to tell."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot  # type: ignore[import-not-found]
    except ImportError:
        return False
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)
    return True
