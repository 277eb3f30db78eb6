"""A tenant's webhook signing secret and default endpoints, the body of each event and the outbox
of its deliveries, in the tenant's schema (component `webhooks`); the tenants whose outbox may
hold rows, in the global schema (component `webhook_outbox_tenants`).

The secret is Standard Webhooks' `whsec_<base64 of 32 random bytes>`, created on first use and
stored only sealed (`crawl.sealing`: Fernet keyed from AUTH_SECRET). After a rotation the old
secret still signs for ROTATION_GRACE_S, so receivers can switch without losing a delivery.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent_patterns.backends import connection
from agent_patterns.tenancy import tenant

if TYPE_CHECKING:
    from psycopg import AsyncConnection, sql

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
ROTATION_GRACE_S = 24 * 3600
MAX_ENDPOINTS = 10


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


@asynccontextmanager
async def _tenant_db(tenant_id: str) -> AsyncIterator[tuple[AsyncConnection, sql.Identifier]]:
    from psycopg import sql

    from agent_patterns.backends.migrations import ensure_tenant_schema
    from agent_patterns.webhooks.schema import WEBHOOKS

    schema = tenant(tenant_id).schema
    async with connection() as db:
        await ensure_tenant_schema(db, schema, WEBHOOKS)
        yield db, sql.Identifier(schema)


async def _config(db: AsyncConnection, s: sql.Identifier) -> tuple[Any, ...] | None:
    from psycopg import sql

    cur = await db.execute(
        sql.SQL(
            "SELECT secret_sealed, previous_secret_sealed,"
            " CASE WHEN rotated_at > now() - make_interval(secs => %s)"
            " THEN rotated_at + make_interval(secs => %s) END, urls"
            " FROM {}.webhook_config"
        ).format(s),
        (ROTATION_GRACE_S, ROTATION_GRACE_S),
    )
    return await cur.fetchone()


async def _ensure_secret(db: AsyncConnection, s: sql.Identifier) -> tuple[str, str | None, datetime | None]:
    """(current secret, previous one while it still signs, until when): creates the secret once."""
    from psycopg import sql

    from agent_patterns.crawl.sealing import seal, unseal

    row = await _config(db, s)
    if row is None or row[0] is None:
        # Two first uses at once: the row lock of ON CONFLICT makes the second keep the first's.
        await db.execute(
            sql.SQL(
                "INSERT INTO {}.webhook_config AS c (id, secret_sealed) VALUES (true, %s)"
                " ON CONFLICT (id) DO UPDATE SET secret_sealed = COALESCE(c.secret_sealed, EXCLUDED.secret_sealed)"
            ).format(s),
            (seal(new_secret()),),
        )
        row = await _config(db, s)
        assert row is not None and row[0] is not None
    previous = unseal(row[1]) if row[1] is not None and row[2] is not None else None
    return unseal(row[0]), previous, row[2] if previous is not None else None


def _shown(current: str, until: datetime | None) -> dict[str, Any]:
    return {"secret": current, "previous_secret_valid_until": until.isoformat() if until is not None else None}


async def secret_info(tenant_id: str) -> dict[str, Any]:
    """`{"secret", "previous_secret_valid_until"}` for GET /v1/webhooks/secret (created on first use)."""
    async with _tenant_db(tenant_id) as (db, s):
        current, _previous, until = await _ensure_secret(db, s)
    return _shown(current, until)


async def signing_secrets(tenant_id: str) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous one for
    ROTATION_GRACE_S after a rotation."""
    async with _tenant_db(tenant_id) as (db, s):
        current, previous, _until = await _ensure_secret(db, s)
    return [current] if previous is None else [current, previous]


async def rotate_secret(tenant_id: str) -> dict[str, Any]:
    """A new secret at once; the old one keeps signing (as a second signature) for ROTATION_GRACE_S."""
    from psycopg import sql

    from agent_patterns.crawl.sealing import seal

    async with _tenant_db(tenant_id) as (db, s):
        await db.execute(
            sql.SQL(
                "INSERT INTO {}.webhook_config AS c (id, secret_sealed, rotated_at) VALUES (true, %s, now())"
                " ON CONFLICT (id) DO UPDATE SET previous_secret_sealed = c.secret_sealed,"
                " secret_sealed = EXCLUDED.secret_sealed, rotated_at = now(), updated_at = now()"
            ).format(s),
            (seal(new_secret()),),
        )
        current, _previous, until = await _ensure_secret(db, s)
    return _shown(current, until)


async def endpoints(tenant_id: str) -> list[str]:
    """The tenant's default endpoints: every run of the tenant is delivered to each."""
    async with _tenant_db(tenant_id) as (db, s):
        row = await _config(db, s)
    return [str(u) for u in row[3]] if row is not None else []


async def set_endpoints(tenant_id: str, urls: list[str]) -> list[str]:
    from psycopg import sql

    kept = list(dict.fromkeys(urls))
    async with _tenant_db(tenant_id) as (db, s):
        await db.execute(
            sql.SQL(
                "INSERT INTO {}.webhook_config (id, urls) VALUES (true, %s)"
                " ON CONFLICT (id) DO UPDATE SET urls = EXCLUDED.urls, updated_at = now()"
            ).format(s),
            (json.dumps(kept),),
        )
    return kept


async def save_event(
    db: AsyncConnection, tenant_id: str, event_id: str, run_id: str, type: str, body: str, pending: Sequence[str]
) -> None:
    """Keep an event's exact body (every retry sends the same bytes; a second save keeps the
    first) and, for each `pending` endpoint, an outbox row (its delivery is not queued yet), with
    the tenant on the sweep's list: in the caller's transaction, so a run's ending commits with
    its webhooks and a delivery SQS never takes is not lost."""
    from psycopg import sql

    from agent_patterns.backends.migrations import ensure_tenant_schema
    from agent_patterns.webhooks.schema import WEBHOOKS

    schema = tenant(tenant_id).schema
    s = sql.Identifier(schema)
    await ensure_tenant_schema(db, schema, WEBHOOKS)
    if pending:
        await _ensure_outbox_tenants(db)
        # first: the row lock keeps a sweep from dropping the tenant meanwhile
        await db.execute(
            "INSERT INTO agent_patterns.webhook_outbox_tenants (tenant_id) VALUES (%s)"
            " ON CONFLICT (tenant_id) DO UPDATE SET touched_at = now()",
            (tenant_id,),
        )
    await db.execute(
        sql.SQL(
            "INSERT INTO {}.webhook_events (event_id, run_id, type, body) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (event_id) DO NOTHING"
        ).format(s),
        (event_id, run_id, type, body),
    )
    if pending:
        await db.execute(
            sql.SQL(
                "INSERT INTO {}.webhook_outbox (event_id, url) SELECT %s, unnest(%s::text[])"
                " ON CONFLICT (event_id, url) DO NOTHING"
            ).format(s),
            (event_id, list(pending)),
        )


async def _ensure_outbox_tenants(db: AsyncConnection) -> None:
    from agent_patterns.backends.migrations import ensure_global
    from agent_patterns.webhooks.schema import OUTBOX_TENANTS

    await ensure_global(db, OUTBOX_TENANTS)


async def clear_pending(tenant_id: str, event_id: str, urls: Sequence[str]) -> None:
    """SQS took these deliveries of the event: they leave the outbox."""
    from psycopg import sql

    async with _tenant_db(tenant_id) as (db, s):
        await db.execute(
            sql.SQL("DELETE FROM {}.webhook_outbox WHERE event_id = %s AND url = ANY(%s::text[])").format(s),
            (event_id, list(urls)),
        )


async def note_pending_error(tenant_id: str, event_id: str, url: str, error: str) -> None:
    """Why the last send of a delivery still in the outbox failed (for whoever looks)."""
    from psycopg import sql

    async with _tenant_db(tenant_id) as (db, s):
        await db.execute(
            sql.SQL("UPDATE {}.webhook_outbox SET last_error = %s WHERE event_id = %s AND url = %s").format(s),
            (error[:500], event_id, url),
        )


async def outbox_tenants(limit: int) -> list[str]:
    """Tenants whose outbox may hold rows, the longest waiting first."""
    async with connection() as db:
        await _ensure_outbox_tenants(db)
        cur = await db.execute(
            "SELECT tenant_id FROM agent_patterns.webhook_outbox_tenants ORDER BY since LIMIT %s", (limit,)
        )
        return [str(row[0]) for row in await cur.fetchall()]


@dataclass
class Claimed:
    """What a sweep took from a tenant's outbox: deliveries to queue again (their send begins
    now: no other sweep takes them before they are due again), and those given up on."""

    due: list[tuple[str, str]] = field(default_factory=list)  # (event_id, url)
    expired: list[tuple[str, str]] = field(default_factory=list)


async def claim_pending(tenant_id: str, older_than_s: float, expire_after_s: float, limit: int) -> Claimed | None:
    """Take the tenant's outbox rows whose last send began more than `older_than_s` ago (at
    most `limit`), dropping those older than `expire_after_s`; an empty outbox takes the tenant
    off the sweep's list. None when another sweep (or a run's ending) holds the tenant now."""
    from psycopg import sql

    async with _tenant_db(tenant_id) as (db, s):
        await _ensure_outbox_tenants(db)
        async with db.transaction():
            cur = await db.execute(
                "SELECT 1 FROM agent_patterns.webhook_outbox_tenants WHERE tenant_id = %s FOR UPDATE SKIP LOCKED",
                (tenant_id,),
            )
            if await cur.fetchone() is None:
                return None
            claimed = Claimed()
            cur = await db.execute(
                sql.SQL(
                    "DELETE FROM {}.webhook_outbox WHERE created_at < now() - make_interval(secs => %s)"
                    " RETURNING event_id, url"
                ).format(s),
                (expire_after_s,),
            )
            claimed.expired = [(str(r[0]), str(r[1])) for r in await cur.fetchall()]
            cur = await db.execute(
                sql.SQL(
                    "UPDATE {s}.webhook_outbox o SET queued_at = now(), sends = o.sends + 1"
                    " FROM (SELECT event_id, url FROM {s}.webhook_outbox"
                    "       WHERE queued_at < now() - make_interval(secs => %s) ORDER BY queued_at LIMIT %s) d"
                    " WHERE o.event_id = d.event_id AND o.url = d.url RETURNING o.event_id, o.url"
                ).format(s=s),
                (older_than_s, limit),
            )
            claimed.due = [(str(r[0]), str(r[1])) for r in await cur.fetchall()]
            if not claimed.due:
                # Read under the lock: an ending locks this row before it adds outbox rows, so
                # every ending not in flight now is seen here, and one in flight made us skip.
                cur = await db.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {}.webhook_outbox)").format(s))
                row = await cur.fetchone()
                if not (row and row[0]):
                    await db.execute(
                        "DELETE FROM agent_patterns.webhook_outbox_tenants WHERE tenant_id = %s", (tenant_id,)
                    )
    return claimed


async def event_body(tenant_id: str, event_id: str) -> str | None:
    from psycopg import sql

    async with _tenant_db(tenant_id) as (db, s):
        cur = await db.execute(sql.SQL("SELECT body FROM {}.webhook_events WHERE event_id = %s").format(s), (event_id,))
        row = await cur.fetchone()
    return None if row is None else str(row[0])
