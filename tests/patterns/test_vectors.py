"""agent_patterns.vectors and agent_patterns.search on the real embedded Postgres with pgvector."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql

from agent_patterns import search, vectors
from agent_patterns.backends import connection
from agent_patterns.backends.postgres import database_url
from agent_patterns.errors import ProvidersUnavailableError, ValidationError

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


@pytest.fixture
async def db() -> AsyncIterator[psycopg.AsyncConnection]:
    from pgvector.psycopg import register_vector_async

    from agent_patterns.backends.migrations import migrate_global

    async with await psycopg.AsyncConnection.connect(database_url(), autocommit=True, prepare_threshold=None) as conn:
        await migrate_global(conn)
        await register_vector_async(conn)
        yield conn


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


async def test_the_hnsw_index_serves_the_ordering(db: psycopg.AsyncConnection) -> None:
    schema = await new_schema(db)
    await vectors.bulk_insert(db, schema, [(f"c{i}", unit(i), None) for i in range(300)])
    await db.execute(sql.SQL("ANALYZE {}.embeddings").format(sql.Identifier(schema)))
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        cur = await db.execute(
            sql.SQL("EXPLAIN SELECT id FROM {}.embeddings ORDER BY embedding <=> %s LIMIT 5").format(
                sql.Identifier(schema)
            ),
            (vectors._vec(unit(1)),),
            binary=True,
        )
        plan = " ".join(r[0] for r in await cur.fetchall())
    assert "embeddings_hnsw" in plan


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


async def test_delete_document_removes_chunks_and_embeddings(db: psycopg.AsyncConnection, stub: object) -> None:
    t = f"v{uuid.uuid4().hex[:10]}"
    await search.ingest(t, [search.DocumentInput(id="doc-1", chunks=[("one", unit(1)), ("two", unit(2))])])
    schema = f"tenant_{t}"
    assert await vectors.delete_document(db, schema, "doc-1")
    for table in ("documents", "chunks", "embeddings"):
        cur = await db.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        )
        assert (await cur.fetchone()) == (0,)


async def test_ingest_chunks_embeds_with_cache_and_reingest_replaces(stub: object) -> None:
    from tests.llm_stub import StubProviders

    assert isinstance(stub, StubProviders)
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


async def test_a_failure_mid_document_leaves_nothing_half_stored(stub: object) -> None:
    t = f"v{uuid.uuid4().hex[:10]}"
    good = search.DocumentInput(id="ok", chunks=[("fine", unit(1))])
    await search.ingest(t, [good])
    bad = search.DocumentInput(id="ok", chunks=[("first", unit(2)), ("second\x00nul", unit(3))])  # NUL: COPY fails
    with pytest.raises(psycopg.Error):
        await search.ingest(t, [bad])
    async with connection() as db:
        cur = await db.execute(sql.SQL("SELECT content FROM {}.chunks").format(sql.Identifier(f"tenant_{t}")))
        assert [r[0] for r in await cur.fetchall()] == ["fine"]  # the old version survives intact


async def test_embedding_failures_are_503_and_store_nothing(stub: object) -> None:
    from tests.llm_stub import StubProviders

    assert isinstance(stub, StubProviders)
    stub.default["embeddings"] = {"status": 500}
    t = f"v{uuid.uuid4().hex[:10]}"
    with pytest.raises(ProvidersUnavailableError):
        await search.ingest(t, [search.DocumentInput(id="d", text="some new text that is not cached")])
    with pytest.raises(ValidationError, match=r"documents\.0\.text"):
        await search.ingest(t, [search.DocumentInput(id="d", text="   ")])
