"""Per-tenant spend control in Redis: idempotent, leased reservations against token and USD
budgets (per UTC day and month) and per-minute rate limits, one script per step.

A reservation is an upper bound (input bytes + overhead + max_tokens, priced at the dearest
model the call may reach), so settling never pushes usage past what was reserved and usage
never passes a budget however many calls run at once. Every step names the reservation: a
script that redis-py retries after a lost reply finds its own work done and does nothing, so
no retry counts anything twice. Each reservation carries a lease (the call's deadline plus a
margin); the next reservation of the tenant reaps expired ones, so a killed call frees its
tokens within the lease. Reaping turns each expired reservation into its ledger row's usage
(its call settled but Redis missed it) or frees it, in one script, so the room it held is never
free while its usage is still uncounted. The counters are a cache of the Postgres ledger (`llm.ledger`): a
counter Redis lost (restart, eviction, failover) is rebuilt from the ledger before anything is
granted, and a reaped reservation whose call did settle in the ledger is applied then.

Keys: every key of a tenant carries its hash tag (`prefix`), so one script's keys always share a
cluster slot. The scripts name their keys in KEYS, except the day and month counters of a
reservation being freed or settled: those are read from the reservation's own record (it may
date from yesterday) and built from the prefix inside the script, in the same slot.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from agent_patterns.backends import get_redis
from agent_patterns.backends.redis import LuaScript

MESSAGE_OVERHEAD_TOKENS = 16
SETTLED_KEPT_S = 3600  # how long a settled id is remembered: retries come within seconds, leases end in minutes
RATE_WINDOW_S = 60
REAP_CLAIM_S = 5  # an expired reservation being reaped is hidden this long (then reaped again)

_RELEASE_FN = """
local function free(prefix, rid, res_key, lease_key)
  local rec = redis.call('HGET', res_key, rid)
  redis.call('ZREM', lease_key, rid)
  if not rec then return nil end
  redis.call('HDEL', res_key, rid)
  local day, month, t, u, minute = string.match(rec, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  for _, k in ipairs({prefix .. 'd:' .. day, prefix .. 'm:' .. month}) do
    if redis.call('EXISTS', k) == 1 then
      for field, amount in pairs({reserved_tokens = t, reserved_nanousd = u}) do
        if amount ~= '0' and redis.call('HINCRBY', k, field, '-' .. amount) < 0 then redis.call('HSET', k, field, 0) end
      end
    end
  end
  return {t, u, minute}
end
"""

# KEYS: day counter, month counter, reservations, leases, settled, rate window, this caller's claim
# ARGV: id, now, deadline, tokens, nanousd, day tokens, day nanousd, month tokens, month nanousd,
#       rpm, tpm, day expire-at, month expire-at, key prefix, day, month, minute, reap ('1': stop
#       and claim the expired reservations, so each is settled or freed atomically first; '2': the
#       claim is done; '0': leave them held, the ledger cannot be read)
RESERVE = LuaScript(
    _RELEASE_FN
    + """
local id = ARGV[1]
local now = tonumber(ARGV[2])
if redis.call('HEXISTS', KEYS[3], id) == 1 or redis.call('ZSCORE', KEYS[5], id) then
  return {1, 'again', {}}
end
local missing = {}
if redis.call('HEXISTS', KEYS[1], 'seeded') == 0 then missing[#missing + 1] = 'day' end
if redis.call('HEXISTS', KEYS[2], 'seeded') == 0 then missing[#missing + 1] = 'month' end
if #missing > 0 then return {2, 'seed', missing} end
local hold = tonumber(redis.call('HGET', KEYS[1], 'hold_until') or '0')
if now < hold then return {5, 'recovering', {}, tostring(hold)} end
local reaped = {}
local claim = KEYS[7]
if ARGV[18] == '2' then redis.call('DEL', claim) end  -- this caller settled or freed its claim
if ARGV[18] ~= '0' then
  if redis.call('EXISTS', claim) == 1 then return {4, 'reap', redis.call('SMEMBERS', claim)} end
  local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)
  if #expired > 0 then
    -- claimed by this caller (also across a retry of this script): hidden from other callers
    -- until it settles or frees them, or for REAP_CLAIM_S if it dies first
    for _, rid in ipairs(expired) do
      redis.call('ZADD', KEYS[4], now + """
    + str(REAP_CLAIM_S)
    + """, rid)
      redis.call('SADD', claim, rid)
    end
    redis.call('EXPIRE', claim, """
    + str(REAP_CLAIM_S)
    + """)
    return {4, 'reap', expired}
  end
end
local tokens = tonumber(ARGV[4])
local rpm = tonumber(ARGV[10])
local tpm = tonumber(ARGV[11])
local req = tonumber(redis.call('HGET', KEYS[6], 'requests') or '0')
local tok = tonumber(redis.call('HGET', KEYS[6], 'tokens') or '0')
if rpm > 0 and req + 1 > rpm then return {3, 'requests', reaped, rpm, req} end
if tpm > 0 and tok + tokens > tpm then return {3, 'tokens', reaped, tpm, tok} end
local checks = {
  {KEYS[1], 'day', 'tokens', tokens, tonumber(ARGV[6])},
  {KEYS[1], 'day', 'nanousd', tonumber(ARGV[5]), tonumber(ARGV[7])},
  {KEYS[2], 'month', 'tokens', tokens, tonumber(ARGV[8])},
  {KEYS[2], 'month', 'nanousd', tonumber(ARGV[5]), tonumber(ARGV[9])},
}
for _, c in ipairs(checks) do
  if c[5] > 0 then
    local used = tonumber(redis.call('HGET', c[1], 'used_' .. c[3]) or '0')
    local held = tonumber(redis.call('HGET', c[1], 'reserved_' .. c[3]) or '0')
    if used + held + c[4] > c[5] then
      return {0, c[2] .. '_' .. c[3], reaped, tostring(c[5]), tostring(used), tostring(held)}
    end
  end
end
for _, k in ipairs({KEYS[1], KEYS[2]}) do
  redis.call('HINCRBY', k, 'reserved_tokens', ARGV[4])
  redis.call('HINCRBY', k, 'reserved_nanousd', ARGV[5])
end
redis.call('EXPIREAT', KEYS[1], ARGV[12])
redis.call('EXPIREAT', KEYS[2], ARGV[13])
redis.call('HSET', KEYS[3], id, ARGV[15] .. '|' .. ARGV[16] .. '|' .. ARGV[4] .. '|' .. ARGV[5] .. '|' .. ARGV[17])
redis.call('ZADD', KEYS[4], ARGV[3], id)
redis.call('HINCRBY', KEYS[6], 'requests', 1)
redis.call('HINCRBY', KEYS[6], 'tokens', ARGV[4])
redis.call('EXPIRE', KEYS[6], 120)
for i = 3, 5 do redis.call('EXPIRE', KEYS[i], 3 * 86400) end
return {1, 'ok', reaped, rpm, rpm - req - 1, tpm, tpm - tok - tokens}
"""
)

# KEYS: reservations, leases, settled, day counter, month counter, outbox
# ARGV: id, tokens, nanousd, now, key prefix, outbox row ('' for none), mark settled ('0': a reaped
#       reservation with no ledger row is freed, and its call may still settle if it is alive)
SETTLE = LuaScript(
    _RELEASE_FN
    + """
local id = ARGV[1]
local now = tonumber(ARGV[4])
if redis.call('ZSCORE', KEYS[3], id) then return {0, redis.call('LLEN', KEYS[6])} end
local freed = free(ARGV[5], id, KEYS[1], KEYS[2])
if freed then
  local refund = tonumber(freed[1]) - tonumber(ARGV[2])
  local window = ARGV[5] .. 'rate:' .. freed[3]
  if refund > 0 and redis.call('EXISTS', window) == 1 then redis.call('HINCRBY', window, 'tokens', -refund) end
end
if tonumber(ARGV[2]) > 0 or tonumber(ARGV[3]) > 0 then
  for _, k in ipairs({KEYS[4], KEYS[5]}) do
    if redis.call('HEXISTS', k, 'seeded') == 1 then
      redis.call('HINCRBY', k, 'used_tokens', ARGV[2])
      redis.call('HINCRBY', k, 'used_nanousd', ARGV[3])
    end
  end
end
if ARGV[7] == '0' then return {1, 0} end
redis.call('ZADD', KEYS[3], now, id)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - """
    + str(SETTLED_KEPT_S)
    + """)
if ARGV[6] ~= '' then redis.call('RPUSH', KEYS[6], ARGV[6]) end
return {1, redis.call('LLEN', KEYS[6])}
"""
)

# KEYS: day counter, month counter, settled, reservations
# ARGV: day tokens, day nanousd, month tokens, month nanousd, day expire-at, month expire-at, now,
#       day, month, hold-until (0: none), ids already counted in the sums...
SEED = LuaScript("""
local seeded = 0
local function held(field_index, value)
  local t, u = 0, 0
  for _, rec in ipairs(redis.call('HVALS', KEYS[4])) do
    local d, m, rt, ru = string.match(rec, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
    if (field_index == 1 and d or m) == value then
      t = t + tonumber(rt)
      u = u + tonumber(ru)
    end
  end
  return t, u
end
local windows = {{KEYS[1], ARGV[1], ARGV[2], ARGV[5], 1, ARGV[8]}, {KEYS[2], ARGV[3], ARGV[4], ARGV[6], 2, ARGV[9]}}
for _, w in ipairs(windows) do
  if redis.call('HEXISTS', w[1], 'seeded') == 0 then
    local t, u = held(w[5], w[6])
    redis.call('HSET', w[1], 'used_tokens', w[2], 'used_nanousd', w[3], 'reserved_tokens', t,
      'reserved_nanousd', u, 'seeded', 1, 'hold_until', ARGV[10])
    redis.call('EXPIREAT', w[1], w[4])
    seeded = 1
  end
end
if seeded == 1 then
  for i = 11, #ARGV do redis.call('ZADD', KEYS[3], ARGV[7], ARGV[i]) end
end
return seeded
""")


# When this Redis began to hold budget state: set by the first seed that finds it missing, so a
# young epoch means a new (or restarted, emptied) Redis. No hash tag: one key for all tenants.
EPOCH_KEY = "budget:epoch"
EPOCH = LuaScript("""
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
""")


@dataclass(frozen=True)
class Limits:
    """A tenant's limits; 0 means no limit. USD amounts are in nano-dollars (exact integers)."""

    daily_tokens: int = 0
    daily_nanousd: int = 0
    monthly_tokens: int = 0
    monthly_nanousd: int = 0
    requests_per_minute: int = 0
    tokens_per_minute: int = 0


@dataclass(frozen=True)
class RateState:
    """What is left of the tenant's per-minute limits (for the x-ratelimit-* headers)."""

    limit_requests: int
    remaining_requests: int
    limit_tokens: int
    remaining_tokens: int
    reset_seconds: float


@dataclass(frozen=True)
class Reservation:
    id: str
    tenant_id: str
    day: dt.date
    tokens: int
    nanousd: int
    rate: RateState | None = None


@dataclass(frozen=True)
class Refusal:
    """Why a reservation was refused, and when asking again can succeed."""

    kind: Literal["budget", "rate"]
    what: str  # day_tokens, day_nanousd, month_tokens, month_nanousd, requests, tokens
    limit: int
    used: int
    reserved: int
    retry_after: int


@dataclass(frozen=True)
class Usage:
    used: int
    reserved: int
    used_nanousd: int = 0
    reserved_nanousd: int = 0


@dataclass
class SeedSums:
    """The ledger's settled totals for a day and its month, and the ids settled lately."""

    day_tokens: int = 0
    day_nanousd: int = 0
    month_tokens: int = 0
    month_nanousd: int = 0
    recent_ids: list[str] = field(default_factory=list)


def prefix(tenant_id: str) -> str:
    """Every key of a tenant shares one hash tag: its scripts stay on one slot in a cluster."""
    return f"budget:{{{tenant_id}}}:"


def day_key(tenant_id: str, day: dt.date) -> str:
    return f"{prefix(tenant_id)}d:{day.isoformat()}"


def month_key(tenant_id: str, day: dt.date) -> str:
    return f"{prefix(tenant_id)}m:{day:%Y-%m}"


OUTBOX_KEY = "budget:ledger-outbox"  # ledger rows waiting for Postgres (see llm.ledger)


def estimate_tokens(*texts: str | None, max_tokens: int) -> int:
    return sum(len(t.encode()) for t in texts if t) + MESSAGE_OVERHEAD_TOKENS + max_tokens


def _utc(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC) if at.tzinfo else at.replace(tzinfo=dt.UTC)


def seconds_until_next_utc_day(now: dt.datetime | None = None) -> int:
    now = _utc(now or dt.datetime.now(dt.UTC))
    tomorrow = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return max(1, int((tomorrow - now).total_seconds()) + 1)


def next_month(day: dt.date) -> dt.date:
    return dt.date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def seconds_until_next_utc_month(now: dt.datetime | None = None) -> int:
    now = _utc(now or dt.datetime.now(dt.UTC))
    first = dt.datetime.combine(next_month(now.date()), dt.time(), tzinfo=dt.UTC)
    return max(1, int((first - now).total_seconds()) + 1)


def _expire_at(day: dt.date) -> tuple[int, int]:
    """Counters outlive their window by a day, so late settlements still find them."""
    day_end = dt.datetime.combine(day + dt.timedelta(days=2), dt.time(), tzinfo=dt.UTC)
    month_end = dt.datetime.combine(next_month(day) + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return int(day_end.timestamp()), int(month_end.timestamp())


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def reserve(
    tenant_id: str,
    tokens: int,
    nanousd: int,
    limits: Limits,
    *,
    lease_seconds: float,
    reservation_id: str | None = None,
) -> Reservation | Refusal:
    """A reservation of `tokens` and `nanousd`, or the refusal that left no room for them."""
    from agent_patterns.llm import ledger

    rid = reservation_id or str(uuid.uuid4())
    reap = "1"
    for _ in range(5):
        now = time.time()
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        minute = int(now // RATE_WINDOW_S)
        p = prefix(tenant_id)
        day_expire, month_expire = _expire_at(today)
        keys = [day_key(tenant_id, today), month_key(tenant_id, today), p + "res", p + "lease", p + "settled"]
        keys += [f"{p}rate:{minute}", f"{p}claimed:{rid}"]
        reply: list[Any] = await RESERVE(
            keys,
            [
                rid,
                repr(now),
                repr(now + lease_seconds),
                tokens,
                nanousd,
                limits.daily_tokens,
                limits.daily_nanousd,
                limits.monthly_tokens,
                limits.monthly_nanousd,
                limits.requests_per_minute,
                limits.tokens_per_minute,
                day_expire,
                month_expire,
                p,
                today.isoformat(),
                f"{today:%Y-%m}",
                minute,
                reap,
            ],
        )
        status, what = int(reply[0]), _s(reply[1])
        if status == 2:
            hold = await recovery_hold(tenant_id, lease_seconds)
            await seed(tenant_id, today, await ledger.seed_sums(tenant_id, today, lease_seconds), hold)
            continue
        if status == 5:
            from agent_patterns.errors import BackendUnavailableError

            wait = max(1, math.ceil(float(_s(reply[3])) - now))
            raise BackendUnavailableError(
                "the budget store (Redis) lost its state moments ago, while calls may have been in flight: "
                f"their usage is still being counted, so nothing is granted for {wait} s more",
                retry_after=wait,
            )
        if status == 4:  # expired reservations first: each is settled from the ledger or freed
            reap = "2" if await ledger.apply_reaped(tenant_id, [_s(r) for r in reply[2]]) else "0"
            continue
        if status == 1:
            rate = None
            if what == "ok" and (int(reply[3]) or int(reply[5])):
                reset = RATE_WINDOW_S - now % RATE_WINDOW_S
                rate = RateState(int(reply[3]), max(0, int(reply[4])), int(reply[5]), max(0, int(reply[6])), reset)
            return Reservation(rid, tenant_id, today, tokens, nanousd, rate)
        if status == 3:
            retry = max(1, int(RATE_WINDOW_S - now % RATE_WINDOW_S) + 1)
            return Refusal("rate", what, int(reply[3]), int(reply[4]), 0, retry)
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        retry = seconds_until_next_utc_day(at) if what.startswith("day") else seconds_until_next_utc_month(at)
        return Refusal("budget", what, int(_s(reply[3])), int(_s(reply[4])), int(_s(reply[5])), retry)
    from agent_patterns.errors import BackendUnavailableError

    raise BackendUnavailableError("the budget counters could not be rebuilt from the usage ledger; try again")


async def recovery_hold(tenant_id: str, lease_seconds: float) -> float:
    """Until when a rebuilt counter grants nothing (0: it may grant at once).

    Counters rebuilt from the ledger know every settled call, but not the calls in flight when
    Redis lost its state: their reservations went with it, and they settle only later. When
    Redis began less than a lease ago (a young epoch) and the tenant's calls were settling in
    the lease before that, it may have had calls in flight: its rebuilt counters wait until the
    epoch plus one lease, when every such call has settled (in the ledger and the counters) or
    died. A tenant idle before (a first deploy, a quiet tenant) waits for nothing; one whose
    only calls ever were all in flight at that moment is not seen (none had settled)."""
    from agent_patterns.llm import ledger

    now = time.time()
    epoch = float(_s(await EPOCH([EPOCH_KEY], [repr(now)])))
    if now - epoch >= lease_seconds:
        return 0.0
    active = await ledger.settled_between(tenant_id, epoch - lease_seconds, epoch)
    return epoch + lease_seconds if active else 0.0


async def seed(tenant_id: str, day: dt.date, sums: SeedSums, hold_until: float = 0.0) -> bool:
    """Rebuild missing counters from the ledger's sums (granting nothing before `hold_until`);
    True if this call set them."""
    p = prefix(tenant_id)
    day_expire, month_expire = _expire_at(day)
    keys = [day_key(tenant_id, day), month_key(tenant_id, day), p + "settled", p + "res"]
    done = await SEED(
        keys,
        [
            sums.day_tokens,
            sums.day_nanousd,
            sums.month_tokens,
            sums.month_nanousd,
            day_expire,
            month_expire,
            repr(time.time()),
            day.isoformat(),
            f"{day:%Y-%m}",
            repr(hold_until),
            *sums.recent_ids,
        ],
    )
    return bool(int(done))


async def settle(
    tenant_id: str,
    reservation_id: str,
    day: dt.date,
    tokens: int,
    nanousd: int,
    outbox: str = "",
    *,
    mark: bool = True,
) -> int:
    """Turn a reservation into usage (idempotent by id; also for a reservation already reaped);
    `outbox` is a ledger row Postgres could not take; `mark=False` frees a reaped reservation
    without closing it. Returns the outbox length."""
    p = prefix(tenant_id)
    keys = [p + "res", p + "lease", p + "settled", day_key(tenant_id, day), month_key(tenant_id, day), OUTBOX_KEY]
    args = [reservation_id, tokens, nanousd, repr(time.time()), p, outbox, "1" if mark else "0"]
    reply: list[Any] = await SETTLE(keys, args)
    return int(reply[1])


async def release(reservation: Reservation) -> None:
    """Give a reservation back unused (the call failed before any usage)."""
    await settle(reservation.tenant_id, reservation.id, reservation.day, 0, 0)


async def usage(tenant_id: str, day: dt.date | None = None) -> Usage:
    values = await get_redis().hmget(
        day_key(tenant_id, day or dt.datetime.now(dt.UTC).date()),
        ["used_tokens", "reserved_tokens", "used_nanousd", "reserved_nanousd"],
    )
    return Usage(*(int(v or 0) for v in values))
