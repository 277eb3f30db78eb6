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
    for n, doc in enumerate(documents):
        if doc.id is not None:
            check_text(doc.id, f"documents.{n}.id")
        _metadata(doc.metadata, f"documents.{n}.metadata")
        if doc.chunks:
            for i, (text, emb) in enumerate(doc.chunks):
                if not check_text(text, f"documents.{n}.chunks.{i}.text").strip():
                    raise ValidationError(f"documents.{n}.chunks.{i}.text: must not be empty")
                try:
                    check_embedding(emb)
                except ValidationError as exc:
                    raise ValidationError(f"documents.{n}.chunks.{i}.embedding: {exc.message}") from exc
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
                await db.execute(sql.SQL("DELETE FROM {}.documents WHERE id = %s").format(s), (doc_id,))
                await db.execute(
                    sql.SQL("INSERT INTO {}.documents (id, metadata) VALUES (%s, %s)").format(s),
                    (doc_id, json.dumps(metadata)),
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
    mode: Literal["vector", "hybrid"] = "vector",
) -> list[ChunkMatch]:
    if not 1 <= limit <= 100:
        raise ValidationError("limit: must be between 1 and 100")
    max_chars = search_settings().search_max_query_chars
    if query is not None and len(check_text(query, "query")) > max_chars:
        raise ValidationError(f"query: {len(query)} characters, more than {max_chars} (SEARCH_MAX_QUERY_CHARS)")
    if metadata_filter is not None:
        _metadata(metadata_filter, "filter")
    if (query is None or not query.strip()) and vector is None:
        raise ValidationError("give a non-empty query or a vector")
    if mode == "hybrid" and (query is None or not query.strip()):
        raise ValidationError("mode hybrid needs a text query")
    embedding = check_embedding(vector) if vector is not None else (await embed(tenant_id, [query or ""]))[0]
    t = tenant(tenant_id)
    async with connection() as db:
        await create_tenant_schema(db, t.schema)
        if mode == "hybrid":
            return await hybrid_search(db, t.schema, query or "", embedding, limit, metadata_filter=metadata_filter)
        return await vector_search(db, t.schema, embedding, limit, metadata_filter=metadata_filter)


async def remove_document(tenant_id: str, document_id: str) -> None:
    """Delete one of the tenant's documents with its chunks and embeddings."""
    check_text(document_id, "document_id")
    t = tenant(tenant_id)
    async with connection() as db:
        await create_tenant_schema(db, t.schema)
        if not await delete_document(db, t.schema, document_id):
            raise NotFoundError(f"document {document_id!r} not found")
