"""Per-tenant daily token budgets in Redis: reserve before the call, settle after, atomically.

A reservation is an upper bound (input bytes + overhead + max_tokens: a token covers at least
one byte, and the output cannot exceed max_tokens), so settling never pushes usage past what
was reserved, and the day's usage never exceeds the budget however many calls run at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from agent_patterns.backends import get_redis

MESSAGE_OVERHEAD_TOKENS = 16

RESERVE = """
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local amount = tonumber(ARGV[1])
if used + reserved + amount > tonumber(ARGV[2]) then
  return {0, used, reserved}
end
redis.call('HINCRBY', KEYS[1], 'reserved', amount)
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return {1, used, reserved + amount}
"""
SETTLE = """
redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(ARGV[1]))
if tonumber(ARGV[2]) > 0 then redis.call('HINCRBY', KEYS[1], 'used', ARGV[2]) end
return 1
"""


def budget_key(tenant_id: str, day: dt.date) -> str:
    return f"budget:{tenant_id}:{day.isoformat()}"


def estimate_tokens(*texts: str | None, max_tokens: int) -> int:
    return sum(len(t.encode()) for t in texts if t) + MESSAGE_OVERHEAD_TOKENS + max_tokens


def seconds_until_next_utc_day(now: dt.datetime | None = None) -> int:
    now = now or dt.datetime.now(dt.UTC)
    tomorrow = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return max(1, int((tomorrow - now).total_seconds()) + 1)


@dataclass(frozen=True)
class Reservation:
    key: str
    amount: int


@dataclass(frozen=True)
class Usage:
    used: int
    reserved: int


async def reserve(tenant_id: str, amount: int, daily_budget: int) -> Reservation | Usage:
    """A Reservation, or the Usage that left no room for `amount`."""
    today = dt.datetime.now(dt.UTC).date()
    key = budget_key(tenant_id, today)
    expire_at = int(dt.datetime.combine(today + dt.timedelta(days=2), dt.time(), tzinfo=dt.UTC).timestamp())
    ok, used, reserved = await get_redis().eval(RESERVE, 1, key, amount, daily_budget, expire_at)
    if not ok:
        return Usage(int(used), int(reserved))
    return Reservation(key, amount)


async def settle(reservation: Reservation, actual_tokens: int) -> None:
    await get_redis().eval(SETTLE, 1, reservation.key, reservation.amount, actual_tokens)


async def release(reservation: Reservation) -> None:
    await settle(reservation, 0)


async def usage(tenant_id: str, day: dt.date | None = None) -> Usage:
    key = budget_key(tenant_id, day or dt.datetime.now(dt.UTC).date())
    values = await get_redis().hmget(key, ["used", "reserved"])
    return Usage(int(values[0] or 0), int(values[1] or 0))
