"""The LLM response cache: a small in-memory layer in front of Redis, and single-flight locks.

The key is SHA-256 of canonical JSON of everything that changes the answer, tenant included,
so tenants never share entries. Memory entries never outlive their Redis entry. Redis errors
make the cache a miss, never a failed call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from agent_patterns.backends import get_redis
from agent_patterns.backends.redis import on_redis_outage, tolerate_redis_outage
from agent_patterns.llm.settings import llm_settings

if TYPE_CHECKING:
    from redis.asyncio.lock import Lock

KEY_VERSION = 1


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

    async def read() -> tuple[str | None, int | None]:
        async with get_redis().pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, pttl = await pipe.execute()
        return raw, pttl

    raw, pttl = await on_redis_outage("llm cache read (a miss)", read(), (None, None))
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


async def lock(key: str, ttl_s: float) -> Lock | bool:
    """Single-flight: the held lock if this caller should make the call, False if another caller
    holds it. With Redis down there is no single-flight: everyone proceeds (True)."""
    held = get_redis().lock(f"{key}:lock", timeout=ttl_s, blocking=False, thread_local=False)
    acquired = await on_redis_outage("llm single-flight lock", held.acquire(), None)
    if acquired is None:
        return True
    return held if acquired else False


async def unlock(held: Lock | bool) -> None:
    if isinstance(held, bool):
        return
    from redis.exceptions import LockError

    with tolerate_redis_outage("llm single-flight unlock"), contextlib.suppress(LockError):
        await held.release()  # LockError: it expired (the call outlived its TTL); nothing to free


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
        if not await on_redis_outage("llm single-flight wait", get_redis().exists(f"{key}:lock"), 0):
            return None  # the holder finished without a result (it failed): try ourselves
    return None
