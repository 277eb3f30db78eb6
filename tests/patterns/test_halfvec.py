"""`EMBEDDING_STORAGE=halfvec`: new tenants store half-precision vectors (half the bytes), search
them through the same API, and tenants created before the switch keep working as they are."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql

from agent_patterns.config import reset_settings
from agent_patterns.search import vectors
from tests.patterns.test_vectors import near, unit


async def new_tenant(db: psycopg.AsyncConnection) -> str:
    schema = f"tenant_h{uuid.uuid4().hex[:10]}"
    await vectors.create_tenant_schema(db, schema)
    rows = [(f"c{i}", unit(i), {"k": "v"}) for i in range(50)] + [("target", near(unit(7_000), 0.001, 1), {"k": "v"})]
    await vectors.bulk_insert(db, schema, rows)
    return schema


async def column_facts(db: psycopg.AsyncConnection, schema: str) -> tuple[str, float]:
    cur = await db.execute(
        sql.SQL(
            "SELECT format_type(a.atttypid, a.atttypmod), (SELECT avg(pg_column_size(embedding)) FROM {}.embeddings)"
            " FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attname = 'embedding'"
        ).format(sql.Identifier(schema)),
        (f"{schema}.embeddings",),
    )
    kind, size = await cur.fetchone()  # type: ignore[misc]
    return str(kind), float(size)


async def test_halfvec_tenants_take_half_the_bytes_and_find_the_same_neighbour(
    db: psycopg.AsyncConnection, settings_env: pytest.MonkeyPatch
) -> None:
    before = await new_tenant(db)  # created with the default storage
    settings_env.setenv("EMBEDDING_STORAGE", "halfvec")
    reset_settings()
    after = await new_tenant(db)
    kind_before, size_before = await column_facts(db, before)
    kind_after, size_after = await column_facts(db, after)
    assert kind_before == "vector(1536)" and kind_after == "halfvec(1536)"
    assert 0.45 < size_after / size_before < 0.55
    for schema in (before, after):  # the old tenant keeps working after the switch
        plain = await vectors.similarity_search(db, schema, unit(7_000), 3)
        filtered = await vectors.similarity_search(db, schema, unit(7_000), 3, metadata_filter={"k": "v"})
        assert plain[0].content == "target" and filtered[0].content == "target"
        assert plain[0].similarity > 0.99
