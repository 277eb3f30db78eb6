"""Document ingestion and search for a tenant: chunk, embed (cached), store atomically, query.

Embeddings come from OpenAI (`EMBEDDING_MODEL`, batched, same retry policy as the llm pattern)
and are cached in Redis by content hash, so re-ingesting unchanged text costs no API call.
Each document is stored in one transaction: a failure leaves nothing half-stored, and
re-ingesting a document id replaces it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from agent_patterns.backends import connection, get_redis
from agent_patterns.backends.redis import is_redis_unavailable, tolerate_redis_outage
from agent_patterns.config import get_settings
from agent_patterns.errors import NotFoundError, PayloadTooLargeError, ValidationError
from agent_patterns.tenancy import tenant
from agent_patterns.vectors import (
    ChunkMatch,
    bulk_insert,
    check_embedding,
    create_tenant_schema,
    delete_document,
    hybrid_search,
)
from agent_patterns.vectors import similarity_search as vector_search

EMBED_BATCH = 256
WORD = re.compile(r"\S+")


@dataclass
class DocumentInput:
    text: str | None = None
    id: str | None = None
    metadata: dict[str, Any] | None = None
    chunks: list[tuple[str, list[float]]] | None = None  # precomputed (text, embedding) pairs


def chunk_text(text: str, max_tokens: int, overlap: int) -> list[str]:
    """Split on whitespace into windows of about `max_tokens` tokens (a word is ~4/3 tokens in
    English BPE), neighbours sharing about `overlap` tokens. No tokenizer download is needed,
    which matters in a Lambda without internet access."""
    words = WORD.findall(text)
    size = max(1, int(max_tokens * 0.75))
    step = max(1, size - int(overlap * 0.75))
    chunks = []
    for start in range(0, len(words), step):
        chunks.append(" ".join(words[start : start + size]))
        if start + size >= len(words):  # this window reached the end: no tail made only of overlap
            break
    return chunks


def _cache_key(model: str, dims: int, text: str) -> str:
    return f"emb:{model}:{dims}:" + hashlib.sha256(text.encode()).hexdigest()


def _pack(v: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()


def _unpack(s: str) -> list[float]:
    raw = base64.b64decode(s)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def embed(texts: list[str]) -> list[list[float]]:
    """Embeddings for `texts`, from the Redis cache where possible, batched for the rest."""
    from agent_patterns.llm.providers import embed_openai

    settings = get_settings()
    model, dims = settings.embedding_model, settings.embedding_dimensions
    keys = [_cache_key(model, dims, t) for t in texts]
    cached: list[str | None] = [None] * len(texts)
    try:
        cached = [None if c is None else str(c) for c in await get_redis().mget(keys)]
    except Exception as exc:
        if not is_redis_unavailable(exc):
            raise
    out: list[list[float] | None] = [_unpack(c) if c else None for c in cached]
    missing = [i for i, v in enumerate(out) if v is None]
    for start in range(0, len(missing), EMBED_BATCH):
        batch = missing[start : start + EMBED_BATCH]
        vectors = await embed_openai(model, [texts[i] for i in batch], dims)
        for i, vector in zip(batch, vectors, strict=True):
            out[i] = vector
        with tolerate_redis_outage("embeddings cache write"):
            async with get_redis().pipeline(transaction=False) as pipe:
                for i, vector in zip(batch, vectors, strict=True):
                    pipe.set(keys[i], _pack(vector), ex=30 * 86_400)
                await pipe.execute()
    return [v for v in out if v is not None]


def _validate_documents(documents: list[DocumentInput]) -> None:
    settings = get_settings()
    if not documents:
        raise ValidationError("documents: give at least one document")
    if len(documents) > settings.search_max_documents:
        raise PayloadTooLargeError(
            f"at most {settings.search_max_documents} documents per request; "
            f"got {len(documents)} (SEARCH_MAX_DOCUMENTS)"
        )
    for n, doc in enumerate(documents):
        if doc.chunks:
            for text, emb in doc.chunks:
                if not text.strip():
                    raise ValidationError(f"documents.{n}.chunks: chunk text must not be empty")
                check_embedding(emb)
        elif doc.text is None or not doc.text.strip():
            raise ValidationError(f"documents.{n}.text: must not be empty")
        length = len(doc.text or "") + sum(len(t) for t, _ in doc.chunks or [])
        if length > settings.search_max_document_chars:
            raise ValidationError(
                f"documents.{n}: longer than {settings.search_max_document_chars} characters "
                "(SEARCH_MAX_DOCUMENT_CHARS)"
            )


async def ingest(tenant_id: str, documents: list[DocumentInput]) -> list[dict[str, Any]]:
    """Store documents for the tenant; returns [{id, chunks}] in input order."""
    from psycopg import sql

    try:
        _validate_documents(documents)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(str(exc)) from exc
    settings = get_settings()
    t = tenant(tenant_id)
    prepared: list[tuple[str, list[tuple[str, list[float]]], dict[str, Any]]] = []
    for doc in documents:  # embeddings first: no transaction stays open during API calls
        if doc.chunks:
            pairs = [(text, emb) for text, emb in doc.chunks]
        else:
            texts = chunk_text(doc.text or "", settings.search_chunk_tokens, settings.search_chunk_overlap)
            pairs = list(zip(texts, await embed(texts), strict=True))
        prepared.append((doc.id or str(uuid.uuid4()), pairs, doc.metadata or {}))
    stored = []
    async with connection() as db:
        await create_tenant_schema(db, t.schema)
        s = sql.Identifier(t.schema)
        for doc_id, pairs, metadata in prepared:
            async with db.transaction():  # one document: all of it or none of it
                await db.execute(sql.SQL("DELETE FROM {}.documents WHERE id = %s").format(s), (doc_id,))
                await db.execute(
                    sql.SQL("INSERT INTO {}.documents (id, metadata) VALUES (%s, %s)").format(s),
                    (doc_id, json.dumps(metadata)),
                )
                await bulk_insert(db, t.schema, [(text, emb, metadata) for text, emb in pairs], document_id=doc_id)
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
    if (query is None or not query.strip()) and vector is None:
        raise ValidationError("give a non-empty query or a vector")
    if mode == "hybrid" and (query is None or not query.strip()):
        raise ValidationError("mode hybrid needs a text query")
    try:
        embedding = check_embedding(vector) if vector is not None else (await embed([query or ""]))[0]
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(f"vector: {exc}") from exc
    t = tenant(tenant_id)
    async with connection() as db:
        await create_tenant_schema(db, t.schema)
        if mode == "hybrid":
            return await hybrid_search(db, t.schema, query or "", embedding, limit, metadata_filter=metadata_filter)
        return await vector_search(db, t.schema, embedding, limit, metadata_filter=metadata_filter)


async def remove_document(tenant_id: str, document_id: str) -> None:
    """Delete one of the tenant's documents with its chunks and embeddings."""
    t = tenant(tenant_id)
    async with connection() as db:
        await create_tenant_schema(db, t.schema)
        if not await delete_document(db, t.schema, document_id):
            raise NotFoundError(f"document {document_id!r} not found")
