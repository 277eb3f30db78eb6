"""The usage ledger: one Postgres row per settled call, the durable truth of what was spent.

Written in the invocation that owes it (nothing runs on Lambda after the response), before the
Redis counters are touched: a call's usage is durable before it counts. When Postgres cannot take
the row, it travels inside the Redis settlement (an outbox list, same script) and is written by
the next call that reaches Postgres; rows are keyed by reservation id, so a row written twice is
one row. The Redis counters are rebuilt from here whenever Redis lost them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any, cast

from psycopg import sql

from agent_patterns.backends import connection, get_redis
from agent_patterns.backends.migrations import Component, Migration, ensure_global
from agent_patterns.llm.budget import OUTBOX_KEY, SeedSums
from agent_patterns.observability import logger

USAGE = Component(
    "llm_usage",
    (
        Migration(
            1,
            "llm usage ledger and tenant budgets",
            lambda _schema: [
                sql.SQL(
                    "CREATE TABLE agent_patterns.llm_usage ("
                    " id bigserial PRIMARY KEY,"
                    " reservation_id uuid NOT NULL UNIQUE,"
                    " tenant_id text NOT NULL,"
                    " day date NOT NULL,"
                    " created_at timestamptz NOT NULL DEFAULT now(),"
                    " request_id text,"
                    " run_id text,"
                    " provider text NOT NULL,"
                    " model text NOT NULL,"
                    " input_tokens integer NOT NULL DEFAULT 0,"
                    " output_tokens integer NOT NULL DEFAULT 0,"
                    " cached_input_tokens integer NOT NULL DEFAULT 0,"
                    " cache_write_tokens integer NOT NULL DEFAULT 0,"
                    " tokens integer NOT NULL,"
                    " cost_nanousd bigint NOT NULL,"
                    " latency_ms real,"
                    " cache_hit boolean NOT NULL DEFAULT false)"
                ),
                sql.SQL("CREATE INDEX llm_usage_tenant_day ON agent_patterns.llm_usage (tenant_id, day)"),
                sql.SQL(
                    "CREATE TABLE agent_patterns.tenant_budgets ("
                    " tenant_id text PRIMARY KEY,"
                    " daily_tokens bigint, daily_usd numeric(20, 9),"
                    " monthly_tokens bigint, monthly_usd numeric(20, 9),"
                    " requests_per_minute integer, tokens_per_minute integer,"
                    " updated_at timestamptz NOT NULL DEFAULT now(), updated_by text)"
                ),
            ],
        ),
        Migration(
            2,
            "cache hits recorded in batches: one row counts several calls",
            lambda _schema: [
                sql.SQL("ALTER TABLE agent_patterns.llm_usage ADD COLUMN calls integer NOT NULL DEFAULT 1"),
            ],
        ),
    ),
)

OUTBOX_FLUSH = 200
HITS_FLUSH_AT = 100  # pending cache-hit rows that make a hit write them at once
HITS_FLUSH_AFTER_S = 60.0  # ... or pending this long


@dataclass(frozen=True)
class Entry:
    """One settled call (or cache hit) as the ledger keeps it."""

    reservation_id: str
    tenant_id: str
    day: str  # ISO date of the reservation: usage counts on the day it was reserved
    provider: str
    model: str
    tokens: int
    cost_nanousd: int
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    latency_ms: float | None = None
    cache_hit: bool = False
    request_id: str | None = None
    run_id: str | None = None
    calls: int = 1

    def json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


_COLUMNS = tuple(Entry.__dataclass_fields__)
_INSERT = sql.SQL(
    "INSERT INTO agent_patterns.llm_usage ({}) VALUES ({}) ON CONFLICT (reservation_id) DO NOTHING"
).format(sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS), sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)))


_insert_text: bytes | None = None  # the statement rendered once (composing it costs ~60 us per write)


def _row(entry: Entry) -> tuple[Any, ...]:
    return tuple(getattr(entry, c) for c in _COLUMNS)


async def record(*entries: Entry) -> None:
    """Write rows (idempotent by reservation id), with the cache hits waiting in this
    environment; raises when Postgres is unreachable (the hits wait for the next write)."""
    global _insert_text
    hits = _take_hits()
    rows = [*entries, *hits]
    if not rows:
        return
    try:
        async with connection() as db:
            await ensure_global(db, USAGE)
            if _insert_text is None:
                _insert_text = _INSERT.as_bytes(db)
            if len(rows) == 1:
                await db.execute(_insert_text, _row(rows[0]))
                return
            async with db.transaction(), db.cursor() as cur:
                await cur.executemany(_insert_text, [_row(e) for e in rows])
    except BaseException:
        _pending_hits.extend(hits)
        raise


# Cache hits cost nothing, so they are not worth a Postgres round trip each: they wait here (one
# row per tenant, day, provider and model, counting calls) and go with the next ledger write, or
# at HITS_FLUSH_AT rows or after HITS_FLUSH_AFTER_S. An environment that dies takes its unwritten
# hit counts along (reports only: no spend is ever at stake in a hit).
_pending_hits: list[Entry] = []
_hit_counts: dict[tuple[str, str, str, str], int] = {}
_hits_since = 0.0


def _take_hits() -> list[Entry]:
    import uuid

    rows = [
        Entry(str(uuid.uuid4()), tenant, day, provider, model, 0, 0, cache_hit=True, calls=n)
        for (tenant, day, provider, model), n in _hit_counts.items()
    ]
    _hit_counts.clear()
    rows += _pending_hits
    _pending_hits.clear()
    return rows


async def record_hit(tenant_id: str, day: str, provider: str, model: str) -> None:
    """Count a cache hit; written in a batch (see above)."""
    import time

    global _hits_since
    if not _hit_counts and not _pending_hits:
        _hits_since = time.monotonic()
    key = (tenant_id, day, provider, model)
    _hit_counts[key] = _hit_counts.get(key, 0) + 1
    if len(_hit_counts) >= HITS_FLUSH_AT or time.monotonic() - _hits_since >= HITS_FLUSH_AFTER_S:
        try:
            await record()
        except Exception:
            logger.warning("cache hits not written to the usage ledger yet", exc_info=True)


async def flush_hits() -> None:
    """Write the hits waiting in this environment now (reports that must include them)."""
    if _hit_counts or _pending_hits:
        await record()


async def flush_outbox() -> int:
    """Write rows that waited in Redis for Postgres; returns how many were written."""
    redis = get_redis()
    raw = cast("list[str] | None", await redis.lpop(OUTBOX_KEY, OUTBOX_FLUSH))
    if not raw:
        return 0
    try:
        await record(*(Entry(**json.loads(r)) for r in raw))
    except Exception:
        try:
            await redis.rpush(OUTBOX_KEY, *raw)
        except Exception:  # both stores failing: the log is the last durable place
            logger.error("ledger rows could not be stored", extra={"rows": raw})
        raise
    return len(raw)


async def seed_sums(tenant_id: str, day: dt.date, lease_seconds: float) -> SeedSums:
    """Settled totals of `day` and of its month, and the ids settled within a lease (whose Redis
    settlement may still arrive after the counters are rebuilt: they must not count twice)."""
    first = day.replace(day=1)
    async with connection() as db:
        await ensure_global(db, USAGE)
        cur = await db.execute(
            "SELECT coalesce(sum(tokens) FILTER (WHERE day = %s), 0),"
            " coalesce(sum(cost_nanousd) FILTER (WHERE day = %s), 0),"
            " coalesce(sum(tokens), 0), coalesce(sum(cost_nanousd), 0),"
            " coalesce(array_agg(reservation_id::text)"
            " FILTER (WHERE day = %s AND NOT cache_hit AND created_at > now() - make_interval(secs => %s)), '{}')"
            " FROM agent_patterns.llm_usage WHERE tenant_id = %s AND day >= %s AND day <= %s",
            (day, day, day, lease_seconds * 2 + 60, tenant_id, first, day),
        )
        row = await cur.fetchone()
    assert row is not None
    return SeedSums(int(row[0]), int(row[1]), int(row[2]), int(row[3]), list(row[4]))


async def settled_between(tenant_id: str, start: float, end: float) -> bool:
    """Whether a call of the tenant settled in the ledger between two epoch times."""
    async with connection() as db:
        await ensure_global(db, USAGE)
        cur = await db.execute(
            "SELECT EXISTS (SELECT 1 FROM agent_patterns.llm_usage"
            " WHERE tenant_id = %s AND created_at BETWEEN to_timestamp(%s) AND to_timestamp(%s) AND NOT cache_hit)",
            (tenant_id, start, end),
        )
        row = await cur.fetchone()
    return bool(row and row[0])


async def apply_reaped(tenant_id: str, reservation_ids: list[str]) -> bool:
    """Expired reservations: those whose call settled in the ledger (its Redis settlement was
    lost) now count as that usage; the others are freed (the call died unsettled). False when
    the ledger cannot be read: they stay held (never freed while their usage may be uncounted)."""
    from agent_patterns.llm import budget

    try:
        async with connection() as db:
            await ensure_global(db, USAGE)
            cur = await db.execute(
                "SELECT reservation_id::text, day, tokens, cost_nanousd FROM agent_patterns.llm_usage"
                " WHERE tenant_id = %s AND reservation_id = ANY(%s::uuid[])",
                (tenant_id, reservation_ids),
            )
            rows = {str(r[0]): r for r in await cur.fetchall()}
    except Exception:
        logger.warning("expired reservations kept: the usage ledger is unreachable", exc_info=True)
        return False
    today = dt.datetime.now(dt.UTC).date()
    for rid in reservation_ids:
        row = rows.get(rid)
        if row is None:
            await budget.settle(tenant_id, rid, today, 0, 0, mark=False)
        else:
            await budget.settle(tenant_id, rid, row[1], int(row[2]), int(row[3]))
    if rows:
        logger.warning("settlements Redis missed applied from the ledger", extra={"count": len(rows)})
    return True
