"""Connections to outside systems. Nothing else in the project opens one.

Each backend holds one client per execution environment (per event loop), reused across
invocations and rebuilt when it breaks or the environment thaws with dead sockets.
"""

from agent_patterns.backends.postgres import connection, reset_postgres
from agent_patterns.backends.redis import get_redis, reset_redis

__all__ = ["connection", "get_redis", "reset_postgres", "reset_redis"]
