"""Migrations: per component, versioned, idempotent, safe when several processes run them at
once, and adopting the versions recorded by the first runner."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import psycopg
import pytest
from psycopg import sql

from agent_patterns.backends import connection
from agent_patterns.backends import migrations as m
from agent_patterns.backends.postgres import database_url
from agent_patterns.crawl.schema import CRAWL
from agent_patterns.errors import InvalidTenantError
from agent_patterns.runs.schema import RUNS
from agent_patterns.search.schema import SEARCH
from tests.conftest import PYTHON, python_subprocess_env

ALL = (RUNS, CRAWL, SEARCH)


def _everything() -> dict[str, list[int]]:
    return {c.name: [mig.version for mig in c.migrations] for c in ALL}


async def _versions(db: psycopg.AsyncConnection, scope: str) -> dict[str, list[int]]:
    cur = await db.execute(
        "SELECT component, version FROM agent_patterns.schema_versions WHERE scope = %s ORDER BY 1, 2", (scope,)
    )
    out: dict[str, list[int]] = {}
    for component, version in await cur.fetchall():
        out.setdefault(component, []).append(version)
    return out


async def _table(db: psycopg.AsyncConnection, name: str) -> bool:
    cur = await db.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def test_a_component_is_applied_once_with_what_it_requires() -> None:
    schema = f"tenant_mig_{uuid.uuid4().hex[:8]}"
    async with connection() as db:
        assert await m.ensure_tenant_schema(db, schema, CRAWL) == {"runs": [1], "crawl": [1, 2]}
        assert not await _table(db, f"{schema}.documents")  # search was not asked for
        m.forget_applied()  # a new execution environment: no in-process memory of the work
        assert await m.ensure_tenant_schema(db, schema, CRAWL) == {}
        assert await m.ensure_tenant_schema(db, schema, SEARCH) == {"search": [1]}
        assert await _versions(db, schema) == _everything()
        assert await _table(db, f"{schema}.runs") and await _table(db, f"{schema}.embeddings")


async def test_concurrent_connections_provision_one_schema_without_errors() -> None:
    schema = f"tenant_conc_{uuid.uuid4().hex[:8]}"
    conns = [await psycopg.AsyncConnection.connect(database_url(), autocommit=True) for _ in range(6)]
    try:
        m.forget_applied()
        results = await asyncio.gather(*(m.ensure_tenant_schema(c, schema, *ALL) for c in conns))
        applied = [r for r in results if r]
        assert applied == [_everything()], results  # exactly one runner did the work, the others waited
        assert await _versions(conns[0], schema) == _everything()
    finally:
        for c in conns:
            await c.close()


async def test_the_webhooks_component_stands_alone() -> None:
    from agent_patterns.webhooks.schema import WEBHOOKS

    schema = f"tenant_wh_{uuid.uuid4().hex[:8]}"
    async with connection() as db:
        assert await m.ensure_tenant_schema(db, schema, WEBHOOKS) == {"webhooks": [1, 2]}
        assert await _table(db, f"{schema}.webhook_config") and await _table(db, f"{schema}.webhook_events")
        assert await _table(db, f"{schema}.webhook_outbox")  # v2
        assert not await _table(db, f"{schema}.runs")  # it requires nothing
        m.forget_applied()
        assert await m.ensure_tenant_schema(db, schema, WEBHOOKS) == {}


def _fresh_database() -> str:
    dbname = f"mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return psycopg.conninfo.make_conninfo(database_url(), dbname=dbname)


def test_two_processes_migrate_a_fresh_database_at_once() -> None:
    url = _fresh_database()
    script = """
import asyncio, json, psycopg
from agent_patterns.backends import migrations as m
from agent_patterns.crawl.schema import CRAWL
from agent_patterns.search.schema import SEARCH
async def main():
    async with await psycopg.AsyncConnection.connect(%r, autocommit=True) as db:
        g = await m.migrate_global(db)
        t = await m.ensure_tenant_schema(db, "tenant_shared", CRAWL, SEARCH)
    print(json.dumps([g, t]))
asyncio.run(main())
""".replace("%r", repr(url))
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", script],
            env=python_subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    # Between them, each migration ran exactly once.
    assert [g for g, _ in results if g] == [{"core": [1]}]
    assert [t for _, t in results if t] == [_everything()]
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT scope, count(*) FROM agent_patterns.schema_versions GROUP BY scope").fetchall()
    assert dict(rows) == {"global": 1, "tenant_shared": sum(len(c.migrations) for c in ALL)}


async def test_versions_recorded_by_the_first_runner_are_adopted_not_reapplied() -> None:
    """A database migrated before components existed: its tables stay, nothing runs twice."""
    url = _fresh_database()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        await db.execute("CREATE SCHEMA agent_patterns")
        await db.execute(
            "CREATE TABLE agent_patterns.schema_migrations (scope text NOT NULL, version integer NOT NULL,"
            " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (scope, version))"
        )
        await db.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await db.execute("CREATE TABLE agent_patterns.tenants (schema_name text PRIMARY KEY)")
        await db.execute("CREATE SCHEMA acme")
        for component in ALL:  # the old runner's tables, created by the same statements
            for stmt in component.migrations[0].statements("acme"):
                await db.execute(stmt)
        await db.execute("INSERT INTO agent_patterns.tenants VALUES ('acme')")
        await db.execute(
            "INSERT INTO agent_patterns.schema_migrations (scope, version, name) VALUES"
            " ('global', 1, 'g'), ('acme', 1, 'runs'), ('acme', 2, 'crawl pages'), ('acme', 3, 'search')"
        )
        await db.execute("INSERT INTO acme.runs (run_id, kind, status) VALUES (gen_random_uuid(), 'crawl', 'complete')")
        m.forget_applied()
        # Re-running any CREATE TABLE would fail with "already exists": adoption must skip them all;
        # what came after the first runner (crawl v2: page Markdown) is applied.
        later = {c.name: [mig.version for mig in c.migrations[1:]] for c in ALL if len(c.migrations) > 1}
        assert await m.ensure_tenant_schema(db, "acme", *ALL) == later
        assert await _versions(db, "acme") == _everything()
        assert await _versions(db, "global") == {"core": [1]}
        cur = await db.execute("SELECT count(*) FROM acme.runs")
        assert (await cur.fetchone()) == (1,)
        assert await _table(db, "agent_patterns.schema_migrations_legacy")
        assert not await _table(db, "agent_patterns.schema_migrations")
    m.forget_applied()


async def test_reserved_schema_names_are_refused() -> None:
    async with connection() as db:
        for name in ("agent_patterns", "pg_catalog_x"):
            with pytest.raises(InvalidTenantError):
                await m.ensure_tenant_schema(db, name, RUNS)
