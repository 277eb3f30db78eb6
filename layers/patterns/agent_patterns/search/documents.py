"""Document ingestion and search for a tenant: chunk, embed (cached), store atomically, query.

Embeddings come from OpenAI (`EMBEDDING_MODEL`, batched, same retry policy as the llm pattern)
and are cached in Redis by content hash, so re-ingesting unchanged text costs no API call.
Each document is stored in one transaction: a failure leaves nothing half-stored, and
re-ingesting a document id replaces it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from agent_patterns.backends import connection
from agent_patterns.errors import NotFoundError, PayloadTooLargeError, ValidationError
from agent_patterns.inputs import check_json, check_text, json_size
from agent_patterns.paging import decode_cursor, encode_cursor, invalid_cursor
from agent_patterns.search.chunking import chunk_text
from agent_patterns.search.embeddings import embed
from agent_patterns.search.settings import search_settings
from agent_patterns.search.vectors import (
    ChunkMatch,
    bulk_insert,
    check_embedding,
    create_tenant_schema,
    delete_document,
    hybrid_search,
    keyword_search,
)
from agent_patterns.search.vectors import similarity_search as vector_search
from agent_patterns.tenancy import tenant


@dataclass
class DocumentInput:
    text: str | None = None
    id: str | None = None
    metadata: dict[str, Any] | None = None
    chunks: list[tuple[str, list[float]]] | None = None  # precomputed (text, embedding) pairs


def _metadata(value: dict[str, Any] | None, field: str) -> dict[str, Any]:
    """Metadata (or a filter) checked for what Postgres refuses and capped in size."""
    cap = search_settings().search_max_metadata_bytes
    check_json(value or {}, field)
    size = json_size(value or {})
    if size > cap:
        raise ValidationError(f"{field}: {size} bytes of JSON, more than {cap} (SEARCH_MAX_METADATA_BYTES)")
    return value or {}


def _validate_documents(documents: list[DocumentInput]) -> None:
    settings = search_settings()
    if not documents:
        raise ValidationError("documents: give at least one document")
    if len(documents) > settings.search_max_documents:
        raise PayloadTooLargeError(
            f"at most {settings.search_max_documents} documents per request; "
            f"got {len(documents)} (SEARCH_MAX_DOCUMENTS)"
        )
    first_at: dict[str, int] = {}
    for n, doc in enumerate(documents):
        if doc.id is not None:
            check_text(doc.id, f"documents.{n}.id")
            if (m := first_at.setdefault(doc.id, n)) != n:  # stored once, so which text would win is unclear
                raise ValidationError(f"documents.{n}.id: {doc.id!r} is also documents.{m}.id; send each document once")
        _metadata(doc.metadata, f"documents.{n}.metadata")
        if doc.chunks:
            for i, (text, emb) in enumerate(doc.chunks):
                if not check_text(text, f"documents.{n}.chunks.{i}.text").strip():
                    raise ValidationError(f"documents.{n}.chunks.{i}.text: must not be empty")
                check_embedding(emb, f"documents.{n}.chunks.{i}.embedding")
        elif doc.text is None or not check_text(doc.text, f"documents.{n}.text").strip():
            raise ValidationError(f"documents.{n}.text: must not be empty")
        length = len(doc.text or "") + sum(len(t) for t, _ in doc.chunks or [])
        if length > settings.search_max_document_chars:
            raise ValidationError(
                f"documents.{n}: longer than {settings.search_max_document_chars} characters "
                "(SEARCH_MAX_DOCUMENT_CHARS)"
            )


async def ingest(tenant_id: str, documents: list[DocumentInput]) -> list[dict[str, Any]]:
    """Store documents for the tenant, all of them or none; returns [{id, chunks}] in input order."""
    from psycopg import sql

    _validate_documents(documents)
    settings = search_settings()
    t = tenant(tenant_id)
    prepared: list[tuple[str, list[tuple[str, list[float]]], dict[str, Any]]] = []
    for doc in documents:  # embeddings first: no transaction stays open during API calls
        if doc.chunks:
            pairs = [(text, emb) for text, emb in doc.chunks]
        else:
            texts = chunk_text(doc.text or "", settings.search_chunk_tokens, settings.search_chunk_overlap)
            pairs = list(zip(texts, await embed(t.id, texts), strict=True))
        prepared.append((doc.id or str(uuid.uuid4()), pairs, doc.metadata or {}))
    stored = []
    async with connection() as db:
        await create_tenant_schema(db, t.schema)
        s = sql.Identifier(t.schema)
        async with db.transaction():  # the whole request: all of it or none of it
            for doc_id, pairs, metadata in prepared:
                # A replaced document keeps its created_at; updated_at is now.
                cur = await db.execute(
                    sql.SQL("DELETE FROM {}.documents WHERE id = %s RETURNING created_at").format(s), (doc_id,)
                )
                replaced = await cur.fetchone()
                await db.execute(
                    sql.SQL(
                        "INSERT INTO {}.documents (id, metadata, created_at) VALUES (%s, %s, COALESCE(%s, now()))"
                    ).format(s),
                    (doc_id, json.dumps(metadata), replaced[0] if replaced else None),
                )
                rows = [(text, emb, metadata) for text, emb in pairs]
                await bulk_insert(db, t.schema, rows, document_id=doc_id)
                stored.append({"id": doc_id, "chunks": len(pairs)})
    return stored


async def search(
    tenant_id: str,
    *,
    query: str | None,
    vector: list[float] | None,
    limit: int,
    metadata_filter: dict[str, Any] | None = None,
    mode: Literal["vector", "hybrid", "keyword"] = "vector",
) -> list[ChunkMatch]:
    """The tenant's best chunks for a query. `vector`: by cosine similarity (the query is
    embedded unless a vector is given); `hybrid`: vector and full-text ranks fused; `keyword`:
    full text only, with no embeddings call."""
    if not 1 <= limit <= 100:
        raise ValidationError("limit: must be between 1 and 100")
    max_chars = search_settings().search_max_query_chars
    if query is not None and len(check_text(query, "query")) > max_chars:
        raise ValidationError(f"query: {len(query)} characters, more than {max_chars} (SEARCH_MAX_QUERY_CHARS)")
    if metadata_filter is not None:
        _metadata(metadata_filter, "filter")
    if (query is None or not query.strip()) and vector is None:
        raise ValidationError("give a non-empty query or a vector")
    if mode in ("hybrid", "keyword") and (query is None or not query.strip()):
        raise ValidationError(f"mode {mode} needs a text query")
    if mode == "keyword" and vector is not None:
        raise ValidationError("vector: mode keyword searches the text only; leave the vector out")
    t = tenant(tenant_id)
    if mode == "keyword":
        async with connection() as db:
            await create_tenant_schema(db, t.schema)
            return await keyword_search(db, t.schema, query or "", limit, metadata_filter=metadata_filter)
    embedding = check_embedding(vector, "vector") if vector is not None else (await embed(tenant_id, [query or ""]))[0]
    async with connection() as db:
        await create_tenant_schema(db, t.schema)
        if mode == "hybrid":
            return await hybrid_search(db, t.schema, query or "", embedding, limit, metadata_filter=metadata_filter)
        matches: list[ChunkMatch] = list(
            await vector_search(db, t.schema, embedding, limit, metadata_filter=metadata_filter)
        )
        return matches


async def remove_document(tenant_id: str, document_id: str) -> None:
    """Delete one of the tenant's documents with its chunks and embeddings."""
    check_text(document_id, "document_id")
    t = tenant(tenant_id)
    async with connection() as db:
        await create_tenant_schema(db, t.schema)
        if not await delete_document(db, t.schema, document_id):
            raise NotFoundError(f"document {document_id!r} not found")


DOCUMENTS_CURSOR = "documents"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_filter(raw: str | None) -> dict[str, Any] | None:
    """The `filter` query parameter of `GET /v1/documents`: a JSON object, checked like search's."""
    if raw is None or raw == "":
        return None
    try:  # NaN and Infinity are not JSON (Postgres refuses them): refused like any other bad JSON
        value = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ValidationError(f'filter: not JSON ({exc}); give an object like {{"team": "eng"}}') from exc
    if not isinstance(value, dict):
        raise ValidationError('filter: must be a JSON object, like {"team": "eng"}')
    return _metadata(value, "filter")


@dataclass(frozen=True)
class DocumentPage:
    documents: list[dict[str, Any]]  # {id, metadata, chunks (count), created_at, updated_at}
    next_cursor: str | None  # None on the last page


async def list_documents(
    tenant_id: str,
    *,
    limit: int = 20,
    cursor: str | None = None,
    metadata_filter: dict[str, Any] | None = None,
) -> DocumentPage:
    """One page of the tenant's documents in id order (keyset: a page starts strictly after the
    cursor's id, so paging is stable while documents come and go). `metadata_filter` is the same
    jsonb containment (`@>`) as search's filter, on the document's metadata."""
    from psycopg import sql
    from psycopg.rows import dict_row

    if not 1 <= limit <= 100:
        raise ValidationError("limit: must be between 1 and 100")
    after = decode_cursor(cursor, DOCUMENTS_CURSOR) if cursor is not None else None
    if after is not None and not isinstance(after, str):
        raise invalid_cursor(DOCUMENTS_CURSOR)
    if metadata_filter is not None:
        _metadata(metadata_filter, "filter")
    t = tenant(tenant_id)
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    if after is not None:
        conditions.append(sql.SQL("d.id > %s"))
        params.append(after)
    if metadata_filter:
        conditions.append(sql.SQL("d.metadata @> %s::jsonb"))
        params.append(json.dumps(metadata_filter))
    where = sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    query = sql.SQL(
        "SELECT d.id, d.metadata, (SELECT count(*) FROM {s}.chunks c WHERE c.document_id = d.id) AS chunks,"
        " d.created_at, d.updated_at FROM {s}.documents d {where} ORDER BY d.id LIMIT %s"
    ).format(s=sql.Identifier(t.schema), where=where)
    async with connection() as db:
        await create_tenant_schema(db, t.schema)
        cur = db.cursor(row_factory=dict_row)
        await cur.execute(query, [*params, limit + 1])  # one more: is there a next page?
        rows = await cur.fetchall()
    page = rows[:limit]
    next_cursor = encode_cursor(DOCUMENTS_CURSOR, page[-1]["id"]) if len(rows) > limit else None
    return DocumentPage(documents=[dict(r) for r in page], next_cursor=next_cursor)


async def get_document(tenant_id: str, document_id: str) -> dict[str, Any]:
    """The document with its chunks in order: {id, metadata, created_at, updated_at, chunks:
    [{chunk_id, position, content, metadata}]}; 404 when the tenant has no such document.
    One statement, so a document replaced meanwhile is read whole, before or after."""
    from psycopg import sql

    check_text(document_id, "document_id")
    t = tenant(tenant_id)
    query = sql.SQL(
        "SELECT d.id, d.metadata, d.created_at, d.updated_at, COALESCE((SELECT json_agg(json_build_object("
        "'chunk_id', c.id, 'position', c.position, 'content', c.content, 'metadata', c.metadata)"
        " ORDER BY c.position, c.id) FROM {s}.chunks c WHERE c.document_id = d.id), '[]'::json)"
        " FROM {s}.documents d WHERE d.id = %s"
    ).format(s=sql.Identifier(t.schema))
    async with connection() as db:
        await create_tenant_schema(db, t.schema)
        cur = await db.execute(query, (document_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"document {document_id!r} not found")
    doc_id, metadata, created_at, updated_at, chunks = row
    return {"id": doc_id, "metadata": metadata, "created_at": created_at, "updated_at": updated_at, "chunks": chunks}


async def stored_metadata(tenant_id: str, document_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The metadata of those of `document_ids` the tenant has (to skip re-embedding what did not change)."""
    from psycopg import sql

    t = tenant(tenant_id)
    async with connection() as db:
        await create_tenant_schema(db, t.schema)
        cur = await db.execute(
            sql.SQL("SELECT id, metadata FROM {}.documents WHERE id = ANY(%s)").format(sql.Identifier(t.schema)),
            (document_ids,),
        )
        return {str(row[0]): dict(row[1] or {}) for row in await cur.fetchall()}


async def documents_where(tenant_id: str, metadata: dict[str, Any]) -> list[str]:
    """Ids of the tenant's documents whose metadata contains `metadata`."""
    from psycopg import sql

    t = tenant(tenant_id)
    async with connection() as db:
        await create_tenant_schema(db, t.schema)
        cur = await db.execute(
            sql.SQL("SELECT id FROM {}.documents WHERE metadata @> %s::jsonb ORDER BY id").format(
                sql.Identifier(t.schema)
            ),
            (json.dumps(metadata),),
        )
        return [str(row[0]) for row in await cur.fetchall()]
