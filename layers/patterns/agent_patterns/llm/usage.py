"""Usage reports from the ledger: what a tenant spent, by model or by day, and what is left."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from agent_patterns.errors import ValidationError

GroupBy = Literal["model", "day"]
MAX_DAYS = 366
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def parse_day(value: str | None, field: str) -> dt.date | None:
    """A UTC day written YYYY-MM-DD, or a 422 naming `field`. Stricter than pydantic's date, which
    also takes a number as a Unix time (`to=0` would silently mean 1970-01-01)."""
    if value is None:
        return None
    if not _DAY.fullmatch(value):
        raise ValidationError(f"{field}: {value[:40]!r} is not a day written YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(f"{field}: {value} is not a day of the calendar ({exc})") from None


def check_range(start: dt.date | None, end: dt.date | None) -> tuple[dt.date, dt.date]:
    """The inclusive day range to report (default: today), or a 422 that says what is wrong."""
    today = dt.datetime.now(dt.UTC).date()
    end = end or today
    start = start or end
    if start > end:
        raise ValidationError(f"from ({start}) is after to ({end})")
    if (end - start).days >= MAX_DAYS:
        raise ValidationError(f"the range is longer than {MAX_DAYS} days: ask for less at a time")
    return start, end


async def report(tenant_id: str, start: dt.date, end: dt.date, group_by: GroupBy) -> dict[str, Any]:
    """Calls, cache hits, tokens and cost per group for the days [start, end], from the ledger."""
    from psycopg import sql

    from agent_patterns.backends import connection
    from agent_patterns.backends.migrations import ensure_global
    from agent_patterns.llm.ledger import USAGE, flush_hits

    column = sql.Identifier("model" if group_by == "model" else "day")
    await flush_hits()  # this environment's hits count too
    async with connection() as db:
        await ensure_global(db, USAGE)
        cur = await db.execute(
            sql.SQL(
                "SELECT {col}, coalesce(sum(calls) FILTER (WHERE NOT cache_hit), 0),"
                " coalesce(sum(calls) FILTER (WHERE cache_hit), 0),"
                " sum(input_tokens), sum(output_tokens), sum(cached_input_tokens), sum(cache_write_tokens),"
                " sum(tokens), sum(cost_nanousd) FROM agent_patterns.llm_usage"
                " WHERE tenant_id = %s AND day BETWEEN %s AND %s GROUP BY {col} ORDER BY {col}"
            ).format(col=column),
            (tenant_id, start, end),
        )
        rows = await cur.fetchall()
    groups = [{group_by: str(r[0]), **_counts(r[1:])} for r in rows]
    totals = {k: sum(g[k] for g in groups) for k in _KEYS if k != "cost_nanousd"}
    totals["cost_usd"] = round(sum(g["cost_usd"] for g in groups), 9)
    return {"from": start.isoformat(), "to": end.isoformat(), "group_by": group_by, "groups": groups, "totals": totals}


_KEYS = (
    "calls",
    "cache_hits",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "tokens",
    "cost_nanousd",
)


def _counts(values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {name: int(value or 0) for name, value in zip(_KEYS, values, strict=True)}
    out["cost_usd"] = out.pop("cost_nanousd") / 1e9
    return out


async def budget_now(tenant_id: str, daily_tokens: int | None = None) -> dict[str, Any]:
    """Today's limits, usage (settled, from the ledger), what calls in flight hold (Redis), and
    what remains."""
    from agent_patterns.backends.redis import on_redis_outage
    from agent_patterns.llm import budget
    from agent_patterns.llm.limits import limits_for

    today = dt.datetime.now(dt.UTC).date()
    limits = await limits_for(tenant_id, daily_tokens)
    settled = (await report(tenant_id, today, today, "day"))["totals"]
    held = await on_redis_outage("reserved usage", budget.usage(tenant_id), budget.Usage(0, 0))
    now = budget.Usage(settled["tokens"], held.reserved, round(settled["cost_usd"] * 1e9), held.reserved_nanousd)
    out: dict[str, Any] = {
        "day": today.isoformat(),
        "daily_tokens": limits.daily_tokens or None,
        "daily_usd": limits.daily_nanousd / 1e9 if limits.daily_nanousd else None,
        "monthly_tokens": limits.monthly_tokens or None,
        "monthly_usd": limits.monthly_nanousd / 1e9 if limits.monthly_nanousd else None,
        "requests_per_minute": limits.requests_per_minute or None,
        "tokens_per_minute": limits.tokens_per_minute or None,
        "used_tokens": now.used,
        "used_usd": now.used_nanousd / 1e9,
        "reserved_tokens": now.reserved,
        "reserved_usd": now.reserved_nanousd / 1e9,
    }
    out["remaining_tokens"] = max(0, limits.daily_tokens - now.used - now.reserved) if limits.daily_tokens else None
    out["remaining_usd"] = (
        max(0, limits.daily_nanousd - now.used_nanousd - now.reserved_nanousd) / 1e9 if limits.daily_nanousd else None
    )
    return out
