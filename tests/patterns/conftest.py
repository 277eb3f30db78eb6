"""Fixtures of the pattern tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest


@pytest.fixture
async def db() -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection of its own (not the environment's), migrated, speaking pgvector's binary types."""
    from pgvector.psycopg import register_vector_async

    from agent_patterns.backends.migrations import migrate_global
    from agent_patterns.backends.postgres import database_url

    async with await psycopg.AsyncConnection.connect(database_url(), autocommit=True, prepare_threshold=None) as conn:
        await migrate_global(conn)
        await register_vector_async(conn)
        yield conn
