"""A tenant's webhook signing secret and default endpoints, and the body of each event, in the
tenant's schema (component `webhooks`).

The secret is Standard Webhooks' `whsec_<base64 of 32 random bytes>`, created on first use and
stored only sealed (`crawl.sealing`: Fernet keyed from AUTH_SECRET). After a rotation the old
secret still signs for ROTATION_GRACE_S, so receivers can switch without losing a delivery.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


async def save_event(tenant_id: str, event_id: str, run_id: str, type: str, body: str) -> None:
    """Keep an event's exact body (every retry sends the same bytes); a second save keeps the first."""
    from psycopg import sql

    async with _tenant_db(tenant_id) as (db, s):
        await db.execute(
            sql.SQL(
                "INSERT INTO {}.webhook_events (event_id, run_id, type, body) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (event_id) DO NOTHING"
            ).format(s),
            (event_id, run_id, type, body),
        )


async def event_body(tenant_id: str, event_id: str) -> str | None:
    from psycopg import sql

    async with _tenant_db(tenant_id) as (db, s):
        cur = await db.execute(sql.SQL("SELECT body FROM {}.webhook_events WHERE event_id = %s").format(s), (event_id,))
        row = await cur.fetchone()
    return None if row is None else str(row[0])
