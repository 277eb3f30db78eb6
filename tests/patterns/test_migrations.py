"""Migrations: versioned, idempotent, and safe when several processes run them at once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import psycopg
from psycopg import sql

from agent_patterns.backends import connection
from agent_patterns.backends import migrations as m
from agent_patterns.backends.postgres import database_url
from tests.conftest import PYTHON, python_subprocess_env


async def _versions(db: psycopg.AsyncConnection, scope: str) -> list[int]:
    cur = await db.execute(
        "SELECT version FROM agent_patterns.schema_migrations WHERE scope = %s ORDER BY version", (scope,)
    )
    return [row[0] for row in await cur.fetchall()]


async def test_tenant_schema_is_created_once_and_rerunning_applies_nothing() -> None:
    schema = f"tenant_mig_{uuid.uuid4().hex[:8]}"
    async with connection() as db:
        assert await m.create_tenant_schema(db, schema) == [mig.version for mig in m.TENANT_MIGRATIONS]
        m.forget_applied()  # a new execution environment: no in-process memory of the work
        assert await m.create_tenant_schema(db, schema) == []
        assert await _versions(db, schema) == [mig.version for mig in m.TENANT_MIGRATIONS]
        cur = await db.execute("SELECT to_regclass(%s)", (f"{schema}.runs",))
        assert (await cur.fetchone())[0] is not None  # type: ignore[index]


async def test_concurrent_connections_provision_one_schema_without_errors() -> None:
    schema = f"tenant_conc_{uuid.uuid4().hex[:8]}"
    conns = [await psycopg.AsyncConnection.connect(database_url(), autocommit=True) for _ in range(6)]
    try:
        m.forget_applied()
        results = await asyncio.gather(*(m.create_tenant_schema(c, schema) for c in conns))
        applied = [r for r in results if r]
        assert len(applied) == 1, results  # exactly one runner did the work, the others waited
        assert await _versions(conns[0], schema) == [mig.version for mig in m.TENANT_MIGRATIONS]
    finally:
        for c in conns:
            await c.close()


def test_two_processes_migrate_a_fresh_database_at_once() -> None:
    dbname = f"mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    url = psycopg.conninfo.make_conninfo(database_url(), dbname=dbname)
    script = """
import asyncio, json, psycopg
from agent_patterns.backends import migrations as m
async def main():
    async with await psycopg.AsyncConnection.connect(%r, autocommit=True) as db:
        g = await m.migrate_global(db)
        t = await m.create_tenant_schema(db, "tenant_shared")
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
    assert sorted(v for g, _ in results for v in g) == [mig.version for mig in m.GLOBAL_MIGRATIONS]
    assert sorted(v for _, t in results for v in t) == [mig.version for mig in m.TENANT_MIGRATIONS]
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT scope, count(*) FROM agent_patterns.schema_migrations GROUP BY scope").fetchall()
    assert dict(rows) == {"global": len(m.GLOBAL_MIGRATIONS), "tenant_shared": len(m.TENANT_MIGRATIONS)}


async def test_reserved_schema_names_are_refused() -> None:
    import pytest

    from agent_patterns.errors import InvalidTenantError

    async with connection() as db:
        for name in ("agent_patterns", "pg_catalog_x"):
            with pytest.raises(InvalidTenantError):
                await m.create_tenant_schema(db, name)
