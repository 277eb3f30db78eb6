"""The LLM response cache: a small in-memory layer in front of Redis, and single-flight locks.

The key is SHA-256 of canonical JSON of everything that changes the answer, tenant included,
so tenants never share entries. Memory entries never outlive their Redis entry. Redis errors
make the cache a miss, never a failed call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections import OrderedDict
from typing import Any

from agent_patterns.backends import get_redis
from agent_patterns.backends.redis import is_redis_unavailable, tolerate_redis_outage
from agent_patterns.llm.settings import llm_settings
from agent_patterns.observability import logger

KEY_VERSION = 1
UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def cache_key(
    *,
    tenant_id: str,
    agent_type: str,
    model: str,
    system: str | None,
    prompt: str,
    temperature: float,
    max_tokens: int,
) -> str:
    material = {
        "v": KEY_VERSION,
        "tenant": tenant_id,
        "agent_type": agent_type,
        "model": model,
        "system": system,
        "prompt": prompt,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "llm:cache:" + hashlib.sha256(canonical.encode()).hexdigest()


class MemoryCache:
    """LRU with per-entry expiry; one per execution environment."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, value: dict[str, Any], ttl_s: float) -> None:
        size = llm_settings().llm_memory_cache_size
        ttl_s = min(ttl_s, llm_settings().llm_memory_cache_ttl_seconds)
        if size <= 0 or ttl_s <= 0:
            return
        self._entries[key] = (time.monotonic() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


memory = MemoryCache()


async def get(key: str) -> tuple[dict[str, Any], str] | None:
    """The cached value and where it came from ("memory" or "redis"), or None."""
    value = memory.get(key)
    if value is not None:
        return value, "memory"
    try:
        async with get_redis().pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, pttl = await pipe.execute()
    except Exception as exc:
        if not is_redis_unavailable(exc):
            raise
        logger.warning("llm cache unavailable; treating as a miss", extra={"error": str(exc)})
        return None
    if raw is None:
        return None
    value = json.loads(raw)
    if pttl and pttl > 0:
        memory.put(key, value, pttl / 1000)  # never longer-lived than the Redis entry
    return value, "redis"


async def put(key: str, value: dict[str, Any]) -> None:
    ttl = llm_settings().llm_cache_ttl_seconds
    with tolerate_redis_outage("llm cache write"):
        await get_redis().set(key, json.dumps(value, separators=(",", ":")), ex=ttl)
        memory.put(key, value, ttl)  # only what Redis holds too


async def lock(key: str, ttl_s: float) -> str | None:
    """A token if this caller should make the call; None if another caller holds it. With
    Redis down there is no single-flight: everyone proceeds ("")."""
    token = secrets.token_hex(8)
    try:
        acquired = await get_redis().set(f"{key}:lock", token, nx=True, px=int(ttl_s * 1000))
    except Exception as exc:
        if not is_redis_unavailable(exc):
            raise
        return ""
    return token if acquired else None


async def unlock(key: str, token: str) -> None:
    if not token:
        return
    with tolerate_redis_outage("llm single-flight unlock"):
        await get_redis().eval(UNLOCK, 1, f"{key}:lock", token)


async def wait_for(key: str, timeout_s: float) -> dict[str, Any] | None:
    """Wait (bounded) for the lock holder's result; None if it gave up or the wait ran out."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while time.monotonic() < deadline:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
        found = await get(key)
        if found is not None:
            return found[0]
        try:
            if not await get_redis().exists(f"{key}:lock"):
                return None  # the holder finished without a result (it failed): try ourselves
        except Exception as exc:
            if not is_redis_unavailable(exc):
                raise
            return None
    return None
