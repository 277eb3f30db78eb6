"""Embeddings from OpenAI (`EMBEDDING_MODEL`, batched), cached in Redis per tenant by content
hash so re-ingesting unchanged text costs no API call."""

from __future__ import annotations

import base64
import hashlib
import struct

from agent_patterns.backends import get_redis
from agent_patterns.backends.redis import on_redis_outage, tolerate_redis_outage
from agent_patterns.search.settings import search_settings

EMBED_BATCH = 256


def _cache_key(tenant_id: str, model: str, dims: int, text: str) -> str:
    # Per tenant: a shared entry would let one tenant learn, by timing, what another embedded.
    return f"emb:{tenant_id}:{model}:{dims}:" + hashlib.sha256(text.encode()).hexdigest()


def _pack(v: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()


def _unpack(s: str) -> list[float]:
    raw = base64.b64decode(s)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def embed(tenant_id: str, texts: list[str]) -> list[list[float]]:
    """Embeddings for `texts`, from the tenant's Redis cache where possible, batched for the rest."""
    from agent_patterns.llm.providers import embed_openai

    settings = search_settings()
    model, dims = settings.embedding_model, settings.embedding_dimensions
    keys = [_cache_key(tenant_id, model, dims, t) for t in texts]
    nothing: list[bytes | str | None] = [None] * len(texts)
    found = await on_redis_outage("embeddings cache read", get_redis().mget(keys), nothing)
    cached = [None if c is None else str(c) for c in found]
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
