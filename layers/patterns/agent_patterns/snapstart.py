"""SnapStart runtime hooks shared by the functions.

Before the snapshot a function imports what its first request would (nothing connects, nothing
unique is made); after a restore the sockets in the snapshot are dead, so the clients are
dropped (closed on their own loop, never used) and made anew, and the PRNG is reseeded so
restored environments do not share retry jitter. Lambda's Python runtime provides
`snapshot_restore_py`; elsewhere `register` does nothing.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Iterable
from typing import Any

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


ADAPTER_BEFORE_CHECKPOINT_PATH = "/_snapstart/before-checkpoint"
ADAPTER_AFTER_RESTORE_PATH = "/_snapstart/after-restore"


def add_adapter_routes(app: Any, before_snapshot: Callable[[], None], after_restore: Callable[[], None]) -> None:
    """The hooks as HTTP routes, for functions whose runtime is the Lambda Web Adapter (1.1.0
    and later): the Python runtime's hooks never run there, the adapter POSTs to these paths
    (AWS_LWA_SNAPSTART_BEFORE_CHECKPOINT_PATH / ..._AFTER_RESTORE_PATH) and answers 403 to anyone
    else asking for them. Off Lambda they are 404s."""
    from fastapi import Response

    from agent_patterns.config import on_lambda
    from agent_patterns.errors import NotFoundError

    def hook(action: Callable[[], None]) -> Callable[[], Any]:
        async def run() -> Response:
            if not on_lambda():  # the dev server and tests have no snapshots to prepare for
                raise NotFoundError("not found")
            action()
            return Response(status_code=204)

        return run

    hooks = ((ADAPTER_BEFORE_CHECKPOINT_PATH, before_snapshot), (ADAPTER_AFTER_RESTORE_PATH, after_restore))
    for path, action in hooks:
        app.add_api_route(
            path, hook(action), methods=["POST"], status_code=204, response_model=None, include_in_schema=False
        )
