"""The LLM response cache: a small in-memory layer in front of Redis, and single-flight locks.

The key is SHA-256 of canonical JSON of everything that changes the answer, tenant included,
so tenants never share entries. Memory entries never outlive their Redis entry. Redis errors
make the cache a miss, never a failed call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from agent_patterns.backends import get_redis
from agent_patterns.backends.redis import LuaScript, on_redis_outage, tolerate_redis_outage
from agent_patterns.llm.settings import llm_settings

KEY_VERSION = 2


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
    return "llm:cache:{" + hashlib.sha256(canonical.encode()).hexdigest() + "}"  # its lock on the same slot


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


@dataclass
class Held:
    """The single-flight lock this caller holds (its token), until it stores or gives up."""

    key: str
    token: str
    released: bool = False


# Read the answer, or take the single-flight lock when there is none: one round trip for both.
LOOKUP = LuaScript("""
local v = redis.call('GET', KEYS[1])
if v then return {v, redis.call('PTTL', KEYS[1])} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {false, 1} end
return {false, 0}
""")
# Store the answer and free the lock (if still ours): one round trip for both.
STORE = LuaScript("""
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if KEYS[2] and redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
""")
UNLOCK = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")


def lock_key(key: str) -> str:
    return f"{key}:lock"


def _remember(key: str, raw: str, pttl: int | None) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(raw)
    if pttl and pttl > 0:
        memory.put(key, value, pttl / 1000)  # never longer-lived than the Redis entry
    return value


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
    return _remember(key, raw, pttl), "redis"


async def lookup(key: str, lock_ttl_s: float) -> tuple[tuple[dict[str, Any], str] | None, Held | bool]:
    """The cached value and its layer; or None and the single-flight lock (a Held to keep while
    asking the provider, False when another caller holds it, True when Redis is down: no
    single-flight then, everyone proceeds)."""
    value = memory.get(key)
    if value is not None:
        return (value, "memory"), True
    token = uuid.uuid4().hex
    reply = await on_redis_outage(
        "llm cache read (a miss)", LOOKUP([key, lock_key(key)], [token, int(lock_ttl_s * 1000)]), None
    )
    if reply is None:
        return None, True
    raw, state = reply
    if raw is not None:
        return (_remember(key, raw, int(state)), "redis"), True
    return None, Held(key, token) if int(state) == 1 else False


async def put(key: str, value: dict[str, Any], held: Held | bool = True) -> None:
    """Store an answer (and free the caller's lock in the same round trip)."""
    ttl = llm_settings().llm_cache_ttl_seconds
    raw = json.dumps(value, separators=(",", ":"))
    with tolerate_redis_outage("llm cache write"):
        if isinstance(held, Held) and not held.released:
            await STORE([key, lock_key(key)], [raw, ttl, held.token])
            held.released = True
        else:
            await STORE([key], [raw, ttl])
        memory.put(key, value, ttl)  # only what Redis holds too


async def unlock(held: Held | bool) -> None:
    """Free the lock if this caller still holds it (it failed, or answered without storing)."""
    if not isinstance(held, Held) or held.released:
        return
    held.released = True
    with tolerate_redis_outage("llm single-flight unlock"):
        await UNLOCK([lock_key(held.key)], [held.token])


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
        if not await on_redis_outage("llm single-flight wait", get_redis().exists(lock_key(key)), 0):
            return None  # the holder finished without a result (it failed): try ourselves
    return None
