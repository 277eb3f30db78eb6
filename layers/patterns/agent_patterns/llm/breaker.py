"""A circuit breaker for the primary provider, shared by all execution environments (Redis).

`threshold` failed calls within `window` seconds open it for `cooldown` seconds: callers go
straight to the fallback instead of waiting out retries. After the cooldown one call tries the
primary again; a success closes it, a failure opens it again.
"""

from __future__ import annotations

from agent_patterns.backends import get_redis
from agent_patterns.backends.redis import on_redis_outage, tolerate_redis_outage
from agent_patterns.llm.settings import llm_settings


def _keys(provider: str) -> tuple[str, str]:
    return f"llm:breaker:{provider}:failures", f"llm:breaker:{provider}:open"


async def is_open(provider: str) -> bool:
    # No shared state during an outage: behave as closed.
    return bool(await on_redis_outage("circuit breaker check", get_redis().exists(_keys(provider)[1]), 0))


async def record_failure(provider: str) -> None:
    settings = llm_settings()
    failures, opened = _keys(provider)
    with tolerate_redis_outage("circuit breaker update"):
        count = int(await get_redis().incr(failures))
        if count == 1:  # the window starts with the first failure (EXPIRE NX needs Redis 7)
            await get_redis().expire(failures, settings.llm_breaker_window_seconds)
        if count >= settings.llm_breaker_threshold:
            await get_redis().set(opened, "1", ex=settings.llm_breaker_cooldown_seconds)
            await get_redis().delete(failures)


async def record_success(provider: str) -> None:
    with tolerate_redis_outage("circuit breaker reset"):
        await get_redis().delete(*_keys(provider))
