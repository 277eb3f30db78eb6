"""Filtered vector search on pgvector 0.8: iterative index scans fill the page, and a filter too
selective for the index falls back to exact ranking of the matching rows."""

from __future__ import annotations

import math
import uuid
from typing import Any

import psycopg
from psycopg import sql

from agent_patterns.search import vectors
from tests.patterns.test_vectors import unit


class Recording:
    """A connection that remembers the statements it was asked to run."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self._conn = conn
        self.statements: list[tuple[Any, Any]] = []

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        self.statements.append((query, params))
        return await self._conn.execute(query, params, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def tenant_with(db: psycopg.AsyncConnection, rows: int, tag_every: int) -> str:
    schema = f"tenant_f{uuid.uuid4().hex[:10]}"
    await vectors.create_tenant_schema(db, schema)
    data = [(f"c{i}", unit(i), {"tag": "rare" if i % tag_every == 0 else "common"}) for i in range(rows)]
    await vectors.bulk_insert(db, schema, data)
    await db.execute(sql.SQL("ANALYZE {}.embeddings").format(sql.Identifier(schema)))
    await db.execute(sql.SQL("ANALYZE {}.chunks").format(sql.Identifier(schema)))
    return schema


async def prefer_the_hnsw_index(db: psycopg.AsyncConnection) -> None:
    """On a few hundred rows the planner rightly ranks exactly; these tests need the index path."""
    await db.execute("SET enable_sort = off")  # rows in distance order without a sort: only HNSW gives that


def exact_top(query: list[float], ids: list[int], k: int) -> list[str]:
    def distance(i: int) -> float:
        v = unit(i)
        return 1 - sum(a * b for a, b in zip(query, v, strict=True)) / math.sqrt(sum(a * a for a in v))

    return [f"c{i}" for i in sorted(ids, key=distance)[:k]]


async def test_a_selective_filter_on_the_index_path_still_fills_the_page(db: psycopg.AsyncConnection) -> None:
    """2% of rows match: one HNSW pass (ef_search 40) holds about one of them; the iterative
    scan keeps going until the page is full, and the page is the exact top 10."""
    schema = await tenant_with(db, 600, tag_every=50)  # 12 rare rows among 600
    await prefer_the_hnsw_index(db)  # a small table: make the planner take the index path
    query = unit(10_001)
    spy = Recording(db)
    matches = await vectors.similarity_search(spy, schema, query, 10, metadata_filter={"tag": "rare"})  # type: ignore[arg-type]
    assert not any("enable_indexscan" in str(q) for q, _ in spy.statements)  # the index filled it
    assert len(matches) == 10
    assert all(m.metadata == {"tag": "rare"} for m in matches)
    assert [m.content for m in matches] == exact_top(query, list(range(0, 600, 50)), 10)


async def test_a_broad_filter_is_served_by_the_hnsw_index_in_distance_order(db: psycopg.AsyncConnection) -> None:
    schema = await tenant_with(db, 600, tag_every=2)
    await prefer_the_hnsw_index(db)
    spy = Recording(db)
    matches = await vectors.similarity_search(spy, schema, unit(10_002), 20, metadata_filter={"tag": "rare"})  # type: ignore[arg-type]
    assert len(matches) == 20 and all(m.metadata == {"tag": "rare"} for m in matches)
    distances = [1 - m.similarity for m in matches]
    assert distances == sorted(distances)
    search_sql, params = next((q, p) for q, p in spy.statements if p and len(p) == 3)
    assert any("iterative_scan" in str(q) for q, _ in spy.statements)
    async with db.transaction():  # the plan of exactly the statement similarity_search ran
        await db.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cur = await db.execute(sql.SQL("EXPLAIN ") + search_sql, params, binary=True)
        plan = " ".join(r[0] for r in await cur.fetchall())
    assert "embeddings_hnsw" in plan, plan
    assert not any("enable_indexscan" in str(q) for q, _ in spy.statements)  # no fallback needed


async def test_fewer_matching_rows_than_the_limit_come_back_all_ranked_exactly(db: psycopg.AsyncConnection) -> None:
    schema = await tenant_with(db, 600, tag_every=50)
    await prefer_the_hnsw_index(db)
    query = unit(10_003)
    spy = Recording(db)
    matches = await vectors.similarity_search(spy, schema, query, 20, metadata_filter={"tag": "rare"})  # type: ignore[arg-type]
    assert any("enable_indexscan = off" in str(q) for q, _ in spy.statements)  # the exact fallback ran
    assert [m.content for m in matches] == exact_top(query, list(range(0, 600, 50)), 20)
