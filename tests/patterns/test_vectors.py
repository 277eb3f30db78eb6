"""agent_patterns.vectors and agent_patterns.search on the real embedded Postgres with pgvector."""

from __future__ import annotations

import math
import random
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
import pytest
from psycopg import sql

import agent_patterns.vectors
from agent_patterns import search
from agent_patterns.backends import connection
from agent_patterns.errors import ProvidersUnavailableError, ValidationError
from agent_patterns.search import vectors
from tests.llm_stub import StubProviders
from tests.sql_recording import RecordingConnection

DIM = 1536


def unit(seed: int) -> list[float]:
    rng = random.Random(seed)
    raw = [rng.gauss(0, 1) for _ in range(DIM)]
    norm = math.sqrt(sum(v * v for v in raw))
    return [v / norm for v in raw]


def near(base: list[float], eps: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    raw = [b + rng.gauss(0, eps) for b in base]
    norm = math.sqrt(sum(v * v for v in raw))
    return [v / norm for v in raw]


def test_the_contract_path_is_the_search_module() -> None:
    assert agent_patterns.vectors is vectors


async def new_schema(db: psycopg.AsyncConnection) -> str:
    schema = f"tenant_v{uuid.uuid4().hex[:10]}"
    await vectors.create_tenant_schema(db, schema)
    return schema


async def test_round_trip_returns_the_known_nearest_neighbours(db: psycopg.AsyncConnection) -> None:
    schema = await new_schema(db)
    anchor = unit(1)
    ids = {}
    for name, vec in [
        ("close", near(anchor, 0.01, 2)),
        ("closer", near(anchor, 0.001, 3)),
        ("far", unit(4)),
        ("opposite", [-v for v in anchor]),
    ]:
        cid = await vectors.insert_chunk(db, schema, f"chunk {name}")
        await vectors.insert_embedding(db, schema, cid, vec)
        ids[name] = cid
    matches = await vectors.similarity_search(db, schema, anchor, 4)
    assert [m.chunk_id for m in matches] == [ids["closer"], ids["close"], ids["far"], ids["opposite"]]
    assert matches[0].similarity > 0.99 and abs(matches[-1].similarity) < 1e-3  # 1 - distance/2
    assert all(0.0 <= m.similarity <= 1.0 for m in matches)


@pytest.mark.parametrize("limit", [5, 100], ids=["default-ef-search", "raised-ef-search"])
async def test_the_hnsw_index_serves_similarity_search(db: psycopg.AsyncConnection, limit: int) -> None:
    """EXPLAIN the very statement similarity_search ran (its SQL, parameters, format and the
    settings it made in its transaction): its ordering is served by the HNSW index."""
    schema = await new_schema(db)
    await vectors.bulk_insert(db, schema, [(f"c{i}", unit(i), None) for i in range(300)])
    for table in ("embeddings", "chunks"):
        await db.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
    spy = RecordingConnection(db)
    matches = await vectors.similarity_search(spy.as_connection(), schema, unit(1), limit)
    assert len(matches) == limit and matches[0].content == "c1"
    *settings, search_statement = spy.statements
    assert isinstance(search_statement.query, sql.Composable)
    assert "ORDER BY" in search_statement.query.as_string(db)
    async with db.transaction():
        # 300 rows are few enough that the planner may rank them all exactly; with sorting off the
        # only plan that returns rows in distance order is an index that yields them so.
        await db.execute("SET LOCAL enable_sort = off")
        for statement in settings:  # e.g. SET LOCAL hnsw.ef_search, exactly as it ran
            await db.execute(statement.query, statement.params, binary=statement.binary)
        cur = await db.execute(
            sql.SQL("EXPLAIN ") + search_statement.query, search_statement.params, binary=search_statement.binary
        )
        plan = re.sub(r"'\[[^]]*\]'", "'[...]'", "\n".join(str(r[0]) for r in await cur.fetchall()))
    assert "Index Scan using embeddings_hnsw" in plan, plan
    assert "Sort" not in plan, plan


async def test_a_limit_above_ef_search_returns_limit_rows(db: psycopg.AsyncConnection) -> None:
    schema = await new_schema(db)
    await vectors.bulk_insert(db, schema, [(f"c{i}", unit(i), None) for i in range(150)])
    for limit in (41, 100, 150):
        assert len(await vectors.similarity_search(db, schema, unit(999), limit)) == limit


async def test_filters_return_full_pages(db: psycopg.AsyncConnection) -> None:
    schema = await new_schema(db)
    rows = [(f"c{i}", unit(i), {"lang": "de" if i % 10 == 0 else "en"}) for i in range(400)]
    await vectors.bulk_insert(db, schema, rows)
    matches = await vectors.similarity_search(db, schema, unit(5), 30, metadata_filter={"lang": "de"})
    assert len(matches) == 30 and all(m.metadata == {"lang": "de"} for m in matches)


async def test_hybrid_puts_an_exact_keyword_match_first_when_vectors_tie(db: psycopg.AsyncConnection) -> None:
    schema = await new_schema(db)
    same = unit(7)
    texts = [
        "The quarterly budget report for the marketing team",
        "Kubernetes autoscaling with KEDA on AWS",
        "Notes from the offsite about hiring plans",
    ]
    for text in texts:
        cid = await vectors.insert_chunk(db, schema, text)
        await vectors.insert_embedding(db, schema, cid, same)  # identical vectors: a tie
    for query, expected in [("KEDA autoscaling", texts[1]), ("budget report", texts[0]), ("hiring", texts[2])]:
        matches = await vectors.hybrid_search(db, schema, query, same, 3)
        assert matches[0].content == expected


@pytest.mark.parametrize("bad", [[0.1] * 3, [0.1] * 1537, [math.nan] + [0.0] * 1535, [math.inf] + [0.0] * 1535])
async def test_bad_vectors_are_refused_before_any_sql(db: psycopg.AsyncConnection, bad: list[float]) -> None:
    class NoSQL:
        async def execute(self, *a: object, **k: object) -> None:
            raise AssertionError("SQL ran")

    with pytest.raises(ValueError, match=r"dimensions|NaN"):
        await vectors.insert_embedding(NoSQL(), "tenant_x", uuid.uuid4(), bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dimensions|NaN"):
        await vectors.similarity_search(NoSQL(), "tenant_x", bad, 5)  # type: ignore[arg-type]


async def stored_rows(tenant_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """What the tenant's search tables hold, per table, in a stable order; {} if it has no schema."""
    schema = sql.Identifier(f"tenant_{tenant_id}")
    queries = {
        "documents": "SELECT id, metadata FROM {s}.documents ORDER BY id",
        "chunks": "SELECT document_id, position, content, metadata FROM {s}.chunks ORDER BY document_id, position",
        "embeddings": "SELECT c.content, e.embedding::text FROM {s}.embeddings e JOIN {s}.chunks c"
        " ON c.id = e.chunk_id ORDER BY c.document_id, c.position",
    }
    async with connection() as db:
        cur = await db.execute("SELECT to_regclass(%s) IS NOT NULL", (f"tenant_{tenant_id}.embeddings",))
        if not (await cur.fetchone() or (False,))[0]:
            return {}
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table, query in queries.items():
            cur = await db.execute(sql.SQL(query).format(s=schema))
            out[table] = list(await cur.fetchall())
    return out


async def test_delete_document_removes_chunks_and_embeddings(db: psycopg.AsyncConnection, stub: object) -> None:
    t = f"v{uuid.uuid4().hex[:10]}"
    await search.ingest(t, [search.DocumentInput(id="doc-1", chunks=[("one", unit(1)), ("two", unit(2))])])
    await search.ingest(t, [search.DocumentInput(id="doc-2", chunks=[("three", unit(3))])])
    before = await stored_rows(t)
    assert [len(before[table]) for table in ("documents", "chunks", "embeddings")] == [2, 3, 3]
    assert await vectors.delete_document(db, f"tenant_{t}", "doc-1")
    after = await stored_rows(t)
    assert after["documents"] == [("doc-2", {})]  # the other document is untouched
    assert [row[2] for row in after["chunks"]] == ["three"]
    assert [row[0] for row in after["embeddings"]] == ["three"]
    assert not await vectors.delete_document(db, f"tenant_{t}", "doc-1")  # gone: nothing left to delete


async def test_ingest_chunks_embeds_with_cache_and_reingest_replaces(stub: StubProviders) -> None:
    t = f"v{uuid.uuid4().hex[:10]}"
    text = " ".join(f"word{i}" for i in range(1200))
    stored = await search.ingest(t, [search.DocumentInput(id="doc", text=text, metadata={"src": "a"})])
    assert stored == [{"id": "doc", "chunks": stored[0]["chunks"]}] and stored[0]["chunks"] > 3
    calls = stub.calls["embeddings"]
    again = await search.ingest(t, [search.DocumentInput(id="doc", text=text, metadata={"src": "b"})])
    assert again == stored and stub.calls["embeddings"] == calls  # unchanged text: all from the cache
    async with connection() as db:
        cur = await db.execute(
            sql.SQL("SELECT count(*), min(metadata->>'src') FROM {}.chunks").format(sql.Identifier(f"tenant_{t}"))
        )
        assert await cur.fetchone() == (stored[0]["chunks"], "b")  # replaced, not duplicated
    hits = await search.search(t, query="word5 word6", vector=None, limit=3)
    assert len(hits) == 3 and all(h.document_id == "doc" for h in hits)


async def test_a_failure_mid_document_leaves_nothing_half_stored(stub: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_patterns.search import documents

    t = f"v{uuid.uuid4().hex[:10]}"
    good = search.DocumentInput(id="ok", chunks=[("fine", unit(1))], metadata={"v": 1})
    await search.ingest(t, [good])
    before = await stored_rows(t)
    assert [len(before[table]) for table in ("documents", "chunks", "embeddings")] == [1, 1, 1]
    real_bulk_insert = vectors.bulk_insert
    written: list[uuid.UUID] = []

    async def fails_after_the_first_chunk(
        db: psycopg.AsyncConnection,
        schema_name: str,
        rows: Iterable[tuple[str, Sequence[float], dict[str, Any] | None]],
        *,
        document_id: str | None = None,
    ) -> list[uuid.UUID]:
        first, *_ = rows
        written.extend(await real_bulk_insert(db, schema_name, [first], document_id=document_id))
        raise ConnectionError("connection lost mid-document")

    monkeypatch.setattr(documents, "bulk_insert", fails_after_the_first_chunk)
    bad = search.DocumentInput(id="ok", chunks=[("first", unit(2)), ("second", unit(3))], metadata={"v": 2})
    with pytest.raises(ConnectionError):
        await search.ingest(t, [bad])
    assert len(written) == 1  # the failure really came after the old version was replaced and one chunk written
    assert await stored_rows(t) == before  # the old version survives intact, in every table


async def test_embedding_failures_are_503_and_store_nothing(stub: StubProviders) -> None:
    t = f"v{uuid.uuid4().hex[:10]}"
    await search.ingest(t, [search.DocumentInput(id="d", chunks=[("the old text", unit(1))])])
    before = await stored_rows(t)
    assert [len(before[table]) for table in ("documents", "chunks", "embeddings")] == [1, 1, 1]
    stub.default["embeddings"] = {"status": 500}
    batch = [
        search.DocumentInput(id="ready", chunks=[("embedded by the caller", unit(2))]),  # needs no provider
        search.DocumentInput(id="d", text=f"new text, never embedded before: {uuid.uuid4()}"),
    ]
    with pytest.raises(ProvidersUnavailableError) as info:
        await search.ingest(t, batch)
    assert info.value.status_code == 503 and stub.calls["embeddings"] >= 1
    assert await stored_rows(t) == before  # neither the other document nor the new version of "d"
    calls = stub.calls["embeddings"]
    with pytest.raises(ValidationError, match=r"documents\.0\.text"):
        await search.ingest(t, [search.DocumentInput(id="d", text="   ")])
    assert stub.calls["embeddings"] == calls and await stored_rows(t) == before
