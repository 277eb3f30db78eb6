"""Run status records: one row per run in the tenant's schema (`runs`), the durable truth.

The Redis Stream of a run (see `runs.events`) carries its progress; this table carries its status
and result after the stream has expired.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from agent_patterns.backends import connection
from agent_patterns.errors import ValidationError
from agent_patterns.paging import decode_cursor, encode_cursor, invalid_cursor
from agent_patterns.tenancy import tenant

if TYPE_CHECKING:
    from psycopg import AsyncConnection

RunStatus = Literal["queued", "running", "complete", "error"]
RUN_STATUSES: tuple[RunStatus, ...] = ("queued", "running", "complete", "error")
# The statuses (and event types) after which nothing more happens to a run: the one place this is said.
TERMINAL_STATUSES: frozenset[str] = frozenset({"complete", "error"})
# The kinds of run the project creates (`crawl.jobs.KIND`), which `list_runs` filters on; add a
# kind here when a feature starts creating runs of it.
RUN_KINDS: tuple[str, ...] = ("crawl",)
RUNS_CURSOR = "runs"


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    tenant_id: str
    kind: str
    status: RunStatus
    request: dict[str, Any]
    result: dict[str, Any] | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime


def parse_run_id(run_id: str) -> str:
    """The canonical form of a run id; anything but a UUID is refused before it reaches a key."""
    try:
        return str(uuid.UUID(str(run_id)))
    except ValueError as exc:
        raise ValidationError(f"invalid run id {run_id!r}: expected a UUID") from exc


async def insert_run(tenant_id: str, kind: str, request: dict[str, Any] | None = None) -> str:
    from psycopg import sql  # psycopg loads on first use, not at INIT: it is ~200 ms of import

    from agent_patterns.backends.migrations import ensure_tenant_schema
    from agent_patterns.runs.schema import RUNS

    t = tenant(tenant_id)
    run_id = str(uuid.uuid4())
    async with connection() as db:
        await ensure_tenant_schema(db, t.schema, RUNS)
        await db.execute(
            sql.SQL("INSERT INTO {}.runs (run_id, kind, status, request) VALUES (%s, %s, 'queued', %s)").format(
                sql.Identifier(t.schema)
            ),
            (run_id, kind, json.dumps(request or {})),
        )
    return run_id


async def delete_run(tenant_id: str, run_id: str) -> None:
    """Remove a run that never started (its creation failed half-way)."""
    from psycopg import sql

    t = tenant(tenant_id)
    async with connection() as db:
        await db.execute(
            sql.SQL("DELETE FROM {}.runs WHERE run_id = %s").format(sql.Identifier(t.schema)), (parse_run_id(run_id),)
        )


async def update_run(
    tenant_id: str,
    run_id: str,
    status: RunStatus,
    *,
    result: dict[str, Any] | None = None,
    error_message: str | None = None,
    db: AsyncConnection | None = None,
) -> bool:
    """Move a run to `status`; False (nothing changed) when it has already ended.

    A terminal status is final: a worker finishing after its run was cancelled or reaped must
    not turn `error` into `complete`. `db` is the caller's connection, for a status change that
    must commit together with other rows (a crawl's pages)."""
    if status not in RUN_STATUSES:
        raise ValidationError(f"invalid run status {status!r}: one of {', '.join(RUN_STATUSES)}")
    if db is None:
        async with connection() as own:
            return await _update_run(own, tenant_id, run_id, status, result, error_message)
    return await _update_run(db, tenant_id, run_id, status, result, error_message)


async def _update_run(
    db: AsyncConnection,
    tenant_id: str,
    run_id: str,
    status: RunStatus,
    result: dict[str, Any] | None,
    error_message: str | None,
) -> bool:
    from psycopg import sql

    from agent_patterns.backends.migrations import ensure_tenant_schema
    from agent_patterns.runs.schema import RUNS

    t = tenant(tenant_id)
    rid = parse_run_id(run_id)
    await ensure_tenant_schema(db, t.schema, RUNS)
    cur = await db.execute(
        sql.SQL(
            "UPDATE {}.runs SET status = %s, result = COALESCE(%s, result),"
            " error_message = COALESCE(%s, error_message), updated_at = now()"
            " WHERE run_id = %s AND status <> ALL(%s)"
        ).format(sql.Identifier(t.schema)),
        (status, None if result is None else json.dumps(result), error_message, rid, sorted(TERMINAL_STATUSES)),
    )
    if cur.rowcount:
        return True
    cur = await db.execute(sql.SQL("SELECT 1 FROM {}.runs WHERE run_id = %s").format(sql.Identifier(t.schema)), (rid,))
    if await cur.fetchone() is None:
        from agent_patterns.errors import NotFoundError

        raise NotFoundError(f"run {run_id} not found")
    return False  # it exists and has ended: a terminal status is never overwritten


async def get_run(tenant_id: str, run_id: str) -> RunRecord | None:
    from psycopg import sql
    from psycopg.rows import dict_row

    from agent_patterns.backends.migrations import ensure_tenant_schema
    from agent_patterns.runs.schema import RUNS

    t = tenant(tenant_id)
    rid = parse_run_id(run_id)
    async with connection() as db:
        await ensure_tenant_schema(db, t.schema, RUNS)
        cur = db.cursor(row_factory=dict_row)
        await cur.execute(
            sql.SQL(
                "SELECT run_id, kind, status, request, result, error_message, created_at, updated_at"
                " FROM {}.runs WHERE run_id = %s"
            ).format(sql.Identifier(t.schema)),
            (rid,),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    row["run_id"] = str(row["run_id"])
    return RunRecord(tenant_id=t.id, **row)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run as listed: no request (it may hold sealed secrets) and no result."""

    run_id: str
    kind: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    error_message: str | None


@dataclass(frozen=True, slots=True)
class RunPage:
    runs: list[RunSummary]
    next_cursor: str | None  # None on the last page


def _runs_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    after = decode_cursor(cursor, RUNS_CURSOR)
    try:
        created_at, run_id = after
        if not isinstance(created_at, str) or not isinstance(run_id, str):
            raise TypeError("a cursor holds two strings")
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise ValueError("no time zone")
        return when.astimezone(UTC), uuid.UUID(run_id)
    except (TypeError, ValueError, OverflowError) as exc:  # a cursor of this list, but not one this code wrote
        raise invalid_cursor(RUNS_CURSOR) from exc


async def list_runs(
    tenant_id: str,
    *,
    limit: int = 20,
    cursor: str | None = None,
    kind: str | None = None,
    status: str | None = None,
) -> RunPage:
    """One page of the tenant's runs, newest first (`created_at`, then `run_id`, descending),
    optionally only of one `kind` (`RUN_KINDS`) and one `status` (`RUN_STATUSES`): anything else
    is a 422 before any SQL. A page starts strictly after the cursor's run (keyset paging), so
    runs created while a client pages never shift or repeat what it sees. Statuses are as
    recorded: a run whose worker died reads `running` until its lease is reaped."""
    from psycopg import sql
    from psycopg.rows import dict_row

    from agent_patterns.backends.migrations import ensure_tenant_schema
    from agent_patterns.runs.schema import RUNS

    if not 1 <= limit <= 100:
        raise ValidationError("limit: must be between 1 and 100")
    if kind is not None and kind not in RUN_KINDS:
        raise ValidationError(f"kind: {kind[:40]!r} is not a run kind; one of {', '.join(RUN_KINDS)}")
    if status is not None and status not in RUN_STATUSES:
        raise ValidationError(f"status: {status[:40]!r} is not a run status; one of {', '.join(RUN_STATUSES)}")
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    if cursor is not None:
        conditions.append(sql.SQL("(created_at, run_id) < (%s, %s)"))
        params.extend(_runs_cursor(cursor))
    if kind is not None:
        conditions.append(sql.SQL("kind = %s"))
        params.append(kind)
    if status is not None:
        conditions.append(sql.SQL("status = %s"))
        params.append(status)
    where = sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    t = tenant(tenant_id)
    query = sql.SQL(
        "SELECT run_id, kind, status, created_at, updated_at, error_message FROM {}.runs {}"
        " ORDER BY created_at DESC, run_id DESC LIMIT %s"
    ).format(sql.Identifier(t.schema), where)
    async with connection() as db:
        await ensure_tenant_schema(db, t.schema, RUNS)
        cur = db.cursor(row_factory=dict_row)
        await cur.execute(query, [*params, limit + 1])  # one more: is there a next page?
        rows = await cur.fetchall()
    runs = [RunSummary(**{**row, "run_id": str(row["run_id"])}) for row in rows[:limit]]
    last = runs[-1] if len(rows) > limit else None
    next_cursor = encode_cursor(RUNS_CURSOR, [last.created_at.isoformat(), last.run_id]) if last else None
    return RunPage(runs=runs, next_cursor=next_cursor)
