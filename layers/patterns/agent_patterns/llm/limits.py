"""A tenant's spend and rate limits: defaults from settings, per-tenant overrides in Postgres.

Overrides are changed by an operator (`PUT /v1/admin/tenants/{tenant}/limits`, or `agent-patterns
limits set`) without a deploy, and read through a short per-environment cache: a change is in
force everywhere within LLM_LIMITS_CACHE_SECONDS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from agent_patterns.llm.budget import Limits
from agent_patterns.llm.settings import llm_settings

NANO = Decimal(1_000_000_000)
_cache: dict[str, tuple[float, dict[str, Any]]] = {}


@dataclass(frozen=True)
class Overrides:
    """What an operator set for a tenant; None keeps the default. USD as decimal dollars."""

    daily_tokens: int | None = None
    daily_usd: Decimal | None = None
    monthly_tokens: int | None = None
    monthly_usd: Decimal | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


COLUMNS = tuple(f.name for f in fields(Overrides))


def nanousd(usd: Decimal | float | None) -> int:
    return 0 if usd is None else int((Decimal(str(usd)) * NANO).to_integral_value(rounding="ROUND_FLOOR"))


async def _overrides(tenant_id: str) -> dict[str, Any]:
    ttl = llm_settings().llm_limits_cache_seconds
    hit = _cache.get(tenant_id)
    if hit is not None and time.monotonic() - hit[0] < ttl:
        return hit[1]
    from agent_patterns.backends import connection
    from agent_patterns.backends.migrations import ensure_global
    from agent_patterns.llm.ledger import USAGE

    async with connection() as db:
        await ensure_global(db, USAGE)
        cur = await db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM agent_patterns.tenant_budgets WHERE tenant_id = %s",  # noqa: S608 (fixed names)
            (tenant_id,),
        )
        row = await cur.fetchone()
    found = {} if row is None else {k: v for k, v in zip(COLUMNS, row, strict=True) if v is not None}
    _cache[tenant_id] = (time.monotonic(), found)
    return found


async def limits_for(tenant_id: str, daily_tokens: int | None = None) -> Limits:
    """The limits in force for `tenant_id`: its overrides, else `daily_tokens` (the caller's
    default), else the settings."""
    s = llm_settings()
    o = await _overrides(tenant_id)
    return Limits(
        daily_tokens=int(o.get("daily_tokens", s.llm_daily_token_budget if daily_tokens is None else daily_tokens)),
        daily_nanousd=nanousd(o.get("daily_usd", s.llm_daily_usd_budget or None)),
        monthly_tokens=int(o.get("monthly_tokens", s.llm_monthly_token_budget)),
        monthly_nanousd=nanousd(o.get("monthly_usd", s.llm_monthly_usd_budget or None)),
        requests_per_minute=int(o.get("requests_per_minute", s.llm_requests_per_minute)),
        tokens_per_minute=int(o.get("tokens_per_minute", s.llm_tokens_per_minute)),
    )


async def get_overrides(tenant_id: str) -> Overrides:
    _cache.pop(tenant_id, None)
    return Overrides(**await _overrides(tenant_id))


async def set_overrides(tenant_id: str, changes: dict[str, Any], *, updated_by: str) -> Overrides:
    """Set (a value) or clear (None) overrides; fields not in `changes` are kept."""
    from psycopg import sql

    from agent_patterns.backends import connection
    from agent_patterns.backends.migrations import ensure_global
    from agent_patterns.llm.ledger import USAGE

    unknown = set(changes) - set(COLUMNS)
    if unknown:
        from agent_patterns.errors import ValidationError

        raise ValidationError(f"unknown limit(s) {', '.join(sorted(unknown))}: use {', '.join(COLUMNS)}")
    names = list(changes)
    async with connection() as db:
        await ensure_global(db, USAGE)
        await db.execute(
            sql.SQL(
                "INSERT INTO agent_patterns.tenant_budgets (tenant_id, updated_by{cols}) VALUES (%s, %s{vals})"
                " ON CONFLICT (tenant_id) DO UPDATE SET updated_at = now(), updated_by = EXCLUDED.updated_by{sets}"
            ).format(
                cols=sql.SQL("").join(sql.SQL(", ") + sql.Identifier(n) for n in names),
                vals=sql.SQL("").join(sql.SQL(", %s") for _ in names),
                sets=sql.SQL("").join(sql.SQL(", {c} = EXCLUDED.{c}").format(c=sql.Identifier(n)) for n in names),
            ),
            (tenant_id, updated_by, *changes.values()),
        )
    return await get_overrides(tenant_id)


def forget_cached() -> None:
    _cache.clear()
