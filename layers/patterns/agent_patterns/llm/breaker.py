"""A circuit breaker for the primary provider, shared by all execution environments (Redis).

`threshold` failed calls within `window` seconds open it for `cooldown` seconds: callers go
straight to the fallback instead of waiting out retries. After the cooldown one call tries the
primary again; a success closes it, a failure opens it again.
"""

from __future__ import annotations

import time

from agent_patterns.backends import get_redis
from agent_patterns.backends.redis import on_redis_outage, tolerate_redis_outage
from agent_patterns.llm.settings import llm_settings


def _keys(provider: str) -> tuple[str, str]:
    return f"llm:breaker:{provider}:failures", f"llm:breaker:{provider}:open"


# What this environment last read of each breaker, for a second: the miss path does not pay a
# Redis round trip per call to learn that a closed breaker is still closed.
STATE_TTL_S = 1.0
_state: dict[str, tuple[float, bool]] = {}
_dirty: set[str] = set()  # providers that failed (or were open) here since their last success


async def is_open(provider: str) -> bool:
    known = _state.get(provider)
    if known is not None and known[0] > time.monotonic():
        return known[1]
    # No shared state during an outage: behave as closed.
    opened = bool(await on_redis_outage("circuit breaker check", get_redis().exists(_keys(provider)[1]), 0))
    _state[provider] = (time.monotonic() + STATE_TTL_S, opened)
    if opened:
        _dirty.add(provider)
    return opened


async def record_failure(provider: str) -> None:
    settings = llm_settings()
    failures, opened = _keys(provider)
    _dirty.add(provider)
    with tolerate_redis_outage("circuit breaker update"):
        count = int(await get_redis().incr(failures))
        if count == 1:  # the window starts with the first failure (EXPIRE NX needs Redis 7)
            await get_redis().expire(failures, settings.llm_breaker_window_seconds)
        if count >= settings.llm_breaker_threshold:
            await get_redis().set(opened, "1", ex=settings.llm_breaker_cooldown_seconds)
            await get_redis().delete(failures)
            _state[provider] = (time.monotonic() + min(STATE_TTL_S, settings.llm_breaker_cooldown_seconds), True)


async def record_success(provider: str) -> None:
    """A success closes the breaker; nothing to say when this environment saw no failure (other
    environments' failures age out of their window)."""
    _state[provider] = (time.monotonic() + STATE_TTL_S, False)
    if provider not in _dirty:
        return
    with tolerate_redis_outage("circuit breaker reset"):
        await get_redis().delete(*_keys(provider))
        _dirty.discard(provider)


def forget_state() -> None:
    """Drop what this environment knows of the breakers (tests that reset Redis keys)."""
    _state.clear()
    _dirty.clear()
