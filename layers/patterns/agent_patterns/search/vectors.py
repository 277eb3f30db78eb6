"""Tenant-isolated vector storage and search on Postgres + pgvector.

Every statement names the tenant's schema through `sql.Identifier` after validation; vectors
travel in pgvector's binary format. Queries order by the raw `<=>` distance so the HNSW index
is used, and raise `hnsw.ef_search` (transaction-local) when `limit` exceeds it, so a query
never returns fewer rows than exist and were asked for.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from agent_patterns.backends.postgres import database_key
from agent_patterns.errors import ValidationError
from agent_patterns.search.settings import search_settings
from agent_patterns.tenancy import validate_schema_name

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = [
    "ChunkMatch",
    "VectorMatch",
    "create_tenant_schema",
    "hybrid_search",
    "insert_chunk",
    "insert_embedding",
    "keyword_search",
    "similarity_search",
]
DEFAULT_EF_SEARCH = 40
RRF_K = 60


@dataclass(frozen=True)
class ChunkMatch:
    """One ranked chunk and why it ranked: `score` orders the results of a search (vector mode:
    the similarity; keyword mode: the text rank; hybrid: the reciprocal-rank-fusion sum);
    `similarity` is there whenever the search had a query vector, `keyword_rank` when the
    chunk's text matched the query."""

    chunk_id: uuid.UUID
    content: str
    similarity: float | None  # 1 - cosine_distance / 2, in 0..1; None without a query vector
    document_id: str | None = None
    metadata: dict[str, Any] | None = None
    score: float = 0.0
    keyword_rank: float | None = None  # ts_rank_cd of the chunk's text for the query; None if it did not match


@dataclass(frozen=True)
class VectorMatch(ChunkMatch):
    """A match found by its vector: its similarity is always known."""

    similarity: float


# The largest magnitude each column type holds: pgvector stores float32 (vector) or float16 (halfvec).
LARGEST = {"vector": 3.4028234663852886e38, "halfvec": 65504.0}


def check_embedding(embedding: Sequence[float], field: str = "embedding") -> list[float]:
    """The vector as floats; a 422 (before any SQL) for a wrong length, NaN, infinity, a
    component float32 cannot hold, or an all-zero vector (it has no direction, so its cosine
    similarity is undefined)."""
    dim = search_settings().embedding_dimensions
    values = list(map(float, embedding))
    if len(values) != dim:
        raise ValidationError(f"{field}: has {len(values)} dimensions, expected {dim}")
    # C-level passes: NaN and +/-inf (even both signs together) make the sum non-finite.
    if not math.isfinite(sum(values)):
        raise ValidationError(f"{field}: contains NaN or infinity (or values too large to sum)")
    largest = max(map(abs, values), default=0.0)
    if largest == 0.0:
        raise ValidationError(f"{field}: all zeros, so it has no direction and no similarity can be computed")
    return _in_column(values, "vector", largest, field)


def _in_column(
    values: list[float], storage: str, largest: float | None = None, field: str = "embedding"
) -> list[float]:
    """`values` if the tenant's column type holds every component (halfvec: up to 65504)."""
    largest = max(map(abs, values), default=0.0) if largest is None else largest
    if largest > LARGEST[storage]:
        raise ValidationError(f"{field}: has a component of magnitude {largest:g}, beyond what {storage} holds")
    return values


async def create_tenant_schema(db: AsyncConnection, schema_name: str) -> dict[str, list[int]]:
    """Provision (or upgrade) the tenant's schema with the search tables; idempotent."""
    # Imported here: the migration runner and the schema load psycopg, which INIT need not pay.
    from agent_patterns.backends.migrations import ensure_tenant_schema
    from agent_patterns.search.schema import SEARCH

    return await ensure_tenant_schema(db, schema_name, SEARCH)


def _vec(values: list[float], storage: str = "vector") -> Any:
    """The query or row value in the tenant's column type (binary on the wire)."""
    from pgvector import HalfVector, Vector

    return HalfVector(values) if storage == "halfvec" else Vector(values)


# (database, schema) -> "vector" | "halfvec": fixed when the tenant's schema was created.
_storage: dict[tuple[str, str], str] = {}


async def _storage_of(db: AsyncConnection, schema_name: str) -> str:
    key = (database_key(db), validate_schema_name(schema_name))
    found = _storage.get(key)
    if found is None:
        cur = await db.execute(
            "SELECT format_type(atttypid, NULL) FROM pg_attribute"
            " WHERE attrelid = to_regclass(%s) AND attname = 'embedding'",
            (f"{key[1]}.embeddings",),
        )
        row = await cur.fetchone()
        found = _storage[key] = str(row[0]) if row else "vector"
    return found


def _s(schema_name: str) -> Any:
    from psycopg import sql

    return sql.Identifier(validate_schema_name(schema_name))


async def insert_chunk(
    db: AsyncConnection,
    schema_name: str,
    content: str,
    *,
    document_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    position: int = 0,
) -> uuid.UUID:
    from psycopg import sql

    schema = _s(schema_name)
    if not content.strip():
        raise ValueError("chunk content is empty")
    cur = await db.execute(
        sql.SQL(
            "INSERT INTO {}.chunks (document_id, position, content, metadata) VALUES (%s, %s, %s, %s) RETURNING id"
        ).format(schema),
        (document_id, position, content, json.dumps(metadata or {})),
    )
    row = await cur.fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


async def insert_embedding(
    db: AsyncConnection, schema_name: str, chunk_id: uuid.UUID, embedding: Sequence[float]
) -> uuid.UUID:
    from psycopg import sql

    values = check_embedding(embedding)  # before any SQL
    storage = await _storage_of(db, schema_name)
    values = _in_column(values, storage)
    schema = _s(schema_name)
    cur = await db.execute(
        sql.SQL("INSERT INTO {}.embeddings (chunk_id, embedding) VALUES (%s, %s) RETURNING id").format(schema),
        (chunk_id, _vec(values, storage)),
        binary=True,
    )
    row = await cur.fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


async def bulk_insert(
    db: AsyncConnection,
    schema_name: str,
    rows: Iterable[tuple[str, Sequence[float], dict[str, Any] | None]],
    *,
    document_id: str | None = None,
) -> list[uuid.UUID]:
    """Chunks and their embeddings with binary COPY (the fast path for ingestion)."""
    from psycopg import sql
    from psycopg.types.json import Jsonb

    schema = _s(schema_name)
    prepared = [(uuid.uuid4(), content, check_embedding(emb), meta or {}) for content, emb, meta in rows]
    storage = await _storage_of(db, schema_name)
    for _, _, values, _ in prepared:
        _in_column(values, storage)
    async with db.cursor() as cur:
        async with cur.copy(
            sql.SQL(
                "COPY {}.chunks (id, document_id, position, content, metadata) FROM STDIN WITH (FORMAT BINARY)"
            ).format(schema)
        ) as copy:
            copy.set_types(["uuid", "text", "int4", "text", "jsonb"])
            for position, (cid, content, _, meta) in enumerate(prepared):
                await copy.write_row((cid, document_id, position, content, Jsonb(meta)))
        async with cur.copy(
            sql.SQL("COPY {}.embeddings (chunk_id, embedding) FROM STDIN WITH (FORMAT BINARY)").format(schema)
        ) as copy:
            copy.set_types(["uuid", storage])
            for cid, _, values, _ in prepared:
                await copy.write_row((cid, _vec(values, storage)))
    return [cid for cid, *_ in prepared]


async def _raise_ef_search(db: AsyncConnection, limit: int) -> None:
    if limit > DEFAULT_EF_SEARCH:  # SET LOCAL: this transaction only (and no pinned proxy session)
        await db.execute(f"SET LOCAL hnsw.ef_search = {int(limit)}")


def _match(row: tuple[Any, ...]) -> VectorMatch:
    cid, content, distance, document_id, metadata = row
    similarity = 1.0 - float(distance) / 2.0
    return VectorMatch(uuid.UUID(str(cid)), content, similarity, document_id, metadata, score=similarity)


async def similarity_search(
    db: AsyncConnection,
    schema_name: str,
    query_embedding: Sequence[float],
    limit: int,
    *,
    metadata_filter: dict[str, Any] | None = None,
) -> list[VectorMatch]:
    """The `limit` nearest chunks by cosine distance (HNSW).

    A metadata filter (jsonb containment) uses pgvector 0.8's iterative index scan, which keeps
    scanning the index until `limit` rows pass the filter; when the index runs out first (a
    filter matching only a handful of rows), the filtered rows are ranked exactly instead, so a
    page is never short while matching rows exist.
    """
    from psycopg import sql

    values = check_embedding(query_embedding)  # before any SQL
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be between 1 and 1000")
    schema = _s(schema_name)
    storage = await _storage_of(db, schema_name)
    query_value = _vec(_in_column(values, storage), storage)
    if not metadata_filter:
        query = sql.SQL(
            "SELECT c.id, c.content, e.embedding <=> %s AS distance, c.document_id, c.metadata"
            " FROM {s}.embeddings e JOIN {s}.chunks c ON c.id = e.chunk_id ORDER BY distance LIMIT %s"
        ).format(s=schema)
        async with db.transaction():
            await _raise_ef_search(db, limit)
            cur = await db.execute(query, [query_value, limit], binary=True)
            return [_match(r) for r in await cur.fetchall()]
    # relaxed_order may return neighbours slightly out of order: the outer query re-sorts them.
    query = sql.SQL(
        "WITH nearest AS MATERIALIZED ("
        "SELECT c.id, c.content, e.embedding <=> %s AS distance, c.document_id, c.metadata"
        " FROM {s}.embeddings e JOIN {s}.chunks c ON c.id = e.chunk_id"
        " WHERE c.metadata @> %s::jsonb ORDER BY distance LIMIT %s"
        ") SELECT * FROM nearest ORDER BY distance"
    ).format(s=schema)
    params = [query_value, json.dumps(metadata_filter), limit]
    async with db.transaction():
        await db.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        await _raise_ef_search(db, limit)
        cur = await db.execute(query, params, binary=True)
        rows = await cur.fetchall()
        if len(rows) < limit:  # the index scan stopped (hnsw.max_scan_tuples) before the page filled
            await db.execute("SET LOCAL enable_indexscan = off")  # the GIN bitmap scan + exact ranking
            cur = await db.execute(query, params, binary=True)
            rows = await cur.fetchall()
        return [_match(r) for r in rows]


async def _text_hits(
    db: AsyncConnection,
    schema_name: str,
    query_text: str,
    limit: int,
    *,
    metadata_filter: dict[str, Any] | None,
    query_vector: Any = None,
) -> list[tuple[Any, ...]]:
    """Chunks whose full-text vector (`fts`) matches `plainto_tsquery('english', query_text)`,
    best `ts_rank_cd` first: rows (id, content, document_id, metadata, rank, distance), where
    distance is the chunk's cosine distance to `query_vector` (None without one, or when the
    chunk has no embedding)."""
    from psycopg import sql

    schema = _s(schema_name)
    where = sql.SQL("AND c.metadata @> %s::jsonb") if metadata_filter else sql.SQL("")
    params: list[Any] = []
    distance: sql.Composable = sql.SQL("NULL::float8")
    join: sql.Composable = sql.SQL("")
    if query_vector is not None:
        distance = sql.SQL("e.embedding <=> %s")
        join = sql.SQL("LEFT JOIN {s}.embeddings e ON e.chunk_id = c.id").format(s=schema)
        params.append(query_vector)
    params += [query_text, *([json.dumps(metadata_filter)] if metadata_filter else []), limit]
    cur = await db.execute(
        sql.SQL(
            "SELECT c.id, c.content, c.document_id, c.metadata, ts_rank_cd(c.fts, q)::float8 AS rank, {distance}"
            " FROM {s}.chunks c CROSS JOIN plainto_tsquery('english', %s) q {join}"
            " WHERE c.fts @@ q {where} ORDER BY rank DESC, c.id LIMIT %s"
        ).format(s=schema, distance=distance, join=join, where=where),
        params,
        binary=True,
    )
    return list(await cur.fetchall())


async def keyword_search(
    db: AsyncConnection,
    schema_name: str,
    query_text: str,
    limit: int,
    *,
    metadata_filter: dict[str, Any] | None = None,
) -> list[ChunkMatch]:
    """Full-text search only (the `fts` column, GIN-indexed): no vector, no embeddings call.
    Ranked by `ts_rank_cd` (each match's `score` and `keyword_rank`); `similarity` is None."""
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be between 1 and 1000")
    rows = await _text_hits(db, schema_name, query_text, limit, metadata_filter=metadata_filter)
    return [
        ChunkMatch(uuid.UUID(str(cid)), content, None, document_id, metadata, score=rank, keyword_rank=rank)
        for cid, content, document_id, metadata, rank, _ in rows
    ]


async def hybrid_search(
    db: AsyncConnection,
    schema_name: str,
    query_text: str,
    query_embedding: Sequence[float],
    limit: int,
    *,
    metadata_filter: dict[str, Any] | None = None,
) -> list[ChunkMatch]:
    """Reciprocal rank fusion of vector similarity and full-text rank (k = 60).

    Each match's `score` is its fused score (the sum of 1 / (60 + rank) over the sides that
    found it), `similarity` its cosine similarity to the query vector (for a text-only hit too,
    read in the same text query) and `keyword_rank` its `ts_rank_cd` when its text matched."""
    candidates = max(limit * 4, 40)
    vector_hits = await similarity_search(db, schema_name, query_embedding, candidates, metadata_filter=metadata_filter)
    storage = await _storage_of(db, schema_name)
    query_vector = _vec(_in_column(check_embedding(query_embedding), storage), storage)
    text_hits = await _text_hits(
        db, schema_name, query_text, candidates, metadata_filter=metadata_filter, query_vector=query_vector
    )
    scores: dict[uuid.UUID, float] = {}
    by_id: dict[uuid.UUID, ChunkMatch] = {}
    keyword_ranks: dict[uuid.UUID, float] = {}
    for rank, hit in enumerate(vector_hits):
        scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (RRF_K + rank + 1)
        by_id[hit.chunk_id] = hit
    for rank, (cid, content, document_id, metadata, text_rank, distance) in enumerate(text_hits):
        key = uuid.UUID(str(cid))
        scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank + 1)
        keyword_ranks[key] = float(text_rank)
        similarity = None if distance is None else 1.0 - float(distance) / 2.0
        by_id.setdefault(key, ChunkMatch(key, content, similarity, document_id, metadata))
    ranked = sorted(scores, key=lambda k: (-scores[k], str(k)))[:limit]
    return [replace(by_id[k], score=scores[k], keyword_rank=keyword_ranks.get(k)) for k in ranked]


async def delete_document(db: AsyncConnection, schema_name: str, document_id: str) -> bool:
    """Delete a document with its chunks and embeddings (cascade); False if it did not exist."""
    from psycopg import sql

    cur = await db.execute(sql.SQL("DELETE FROM {}.documents WHERE id = %s").format(_s(schema_name)), (document_id,))
    return cur.rowcount > 0
