"""The migration runner: versioned, idempotent schema changes, per component and per schema.

Features own their schema: each declares a `Component` (a name, the components it builds on,
and its migrations, appended to and never edited once released) and asks for it with
`ensure_tenant_schema(db, schema, COMPONENT)` before touching its tables. Applied versions are
recorded per (schema, component); a transaction-level advisory lock makes concurrent runners
(cold starts of several functions) wait for each other instead of racing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from psycopg import sql

from agent_patterns.backends.postgres import database_key
from agent_patterns.errors import InvalidTenantError
from agent_patterns.tenancy import validate_schema_name

if TYPE_CHECKING:
    from psycopg import AsyncConnection

GLOBAL_SCHEMA = "agent_patterns"
GLOBAL_SCOPE = "global"
Statements = list[sql.SQL | sql.Composed]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    # Tenant migrations compose the schema name with sql.Identifier; global ones ignore it.
    statements: Callable[[str], Statements]


@dataclass(frozen=True)
class Component:
    """A feature's tables: applied after the components it `requires`, in version order."""

    name: str
    migrations: tuple[Migration, ...]
    requires: tuple[Component, ...] = field(default=())


# The one global component: pgvector and the tenant registry every function relies on.
CORE = Component(
    "core",
    (
        Migration(
            1,
            "pgvector extension and tenant registry",
            lambda _schema: [
                sql.SQL("CREATE EXTENSION IF NOT EXISTS vector"),
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS agent_patterns.tenants ("
                    " schema_name text PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now())"
                ),
            ],
        ),
    ),
)

# Versions recorded by the first runner (one list per scope, before components existed), and
# the component version each stands for; copied once into schema_versions.
_LEGACY_TENANT = {1: ("runs", 1), 2: ("crawl", 1), 3: ("search", 1)}

_BOOTSTRAP: Statements = [
    sql.SQL("CREATE SCHEMA IF NOT EXISTS agent_patterns"),
    sql.SQL(
        "CREATE TABLE IF NOT EXISTS agent_patterns.schema_versions ("
        " scope text NOT NULL, component text NOT NULL, version integer NOT NULL, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (scope, component, version))"
    ),
]

# (database, scope, component) known to be current in this execution environment: later calls
# cost no round trip.
_current: set[tuple[str, str, str]] = set()


def _order(components: Sequence[Component]) -> list[Component]:
    """Components with their requirements first, each once."""
    out: list[Component] = []

    def visit(c: Component) -> None:
        for r in c.requires:
            visit(r)
        if c not in out:
            out.append(c)

    for c in components:
        visit(c)
    return out


async def _adopt_legacy_versions(db: AsyncConnection) -> None:
    """Copy the first runner's table (scope, version) into schema_versions, once."""
    cur = await db.execute("SELECT to_regclass('agent_patterns.schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if not (row and row[0]):
        return
    cur = await db.execute("SELECT scope, version, name FROM agent_patterns.schema_migrations")
    for scope, version, name in await cur.fetchall():
        component, new_version = ("core", version) if scope == GLOBAL_SCOPE else _LEGACY_TENANT.get(version, ("", 0))
        if component:
            await db.execute(
                "INSERT INTO agent_patterns.schema_versions (scope, component, version, name)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (scope, component, new_version, name),
            )
    await db.execute("ALTER TABLE agent_patterns.schema_migrations RENAME TO schema_migrations_legacy")


async def _apply(db: AsyncConnection, scope: str, components: list[Component]) -> dict[str, list[int]]:
    applied: dict[str, list[int]] = {}
    async with db.transaction():
        # One lock for everything: bootstrap DDL and per-scope work never race each other
        # (CREATE ... IF NOT EXISTS is not safe under concurrency on its own).
        await db.execute("SELECT pg_advisory_xact_lock(hashtextextended('agent_patterns.migrations', 0))")
        for stmt in _BOOTSTRAP:
            await db.execute(stmt)
        await _adopt_legacy_versions(db)
        if scope != GLOBAL_SCOPE:
            await db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(scope)))
            await db.execute(
                "INSERT INTO agent_patterns.tenants (schema_name) VALUES (%s) ON CONFLICT DO NOTHING", (scope,)
            )
        cur = await db.execute(
            "SELECT component, version FROM agent_patterns.schema_versions WHERE scope = %s", (scope,)
        )
        done = {(row[0], row[1]) for row in await cur.fetchall()}
        for component in components:
            for migration in component.migrations:
                if (component.name, migration.version) in done:
                    continue
                for stmt in migration.statements(scope):
                    await db.execute(stmt)
                await db.execute(
                    "INSERT INTO agent_patterns.schema_versions (scope, component, version, name)"
                    " VALUES (%s, %s, %s, %s)",
                    (scope, component.name, migration.version, migration.name),
                )
                applied.setdefault(component.name, []).append(migration.version)
    return applied


async def migrate_global(db: AsyncConnection) -> dict[str, list[int]]:
    """Bring the global schema up to date; returns {component: versions this call applied}."""
    key = (database_key(db), GLOBAL_SCOPE, CORE.name)
    if key in _current:
        return {}
    applied = await _apply(db, GLOBAL_SCOPE, [CORE])
    _current.add(key)
    return applied


async def ensure_global(db: AsyncConnection, *components: Component) -> dict[str, list[int]]:
    """Provision global tables of `components` (in the `agent_patterns` schema), up to date."""
    dsn = database_key(db)
    wanted = _order(components)
    if all((dsn, GLOBAL_SCOPE, c.name) in _current for c in wanted):
        return {}
    await migrate_global(db)
    applied = await _apply(db, GLOBAL_SCOPE, wanted)
    _current.update((dsn, GLOBAL_SCOPE, c.name) for c in wanted)
    return applied


async def ensure_tenant_schema(db: AsyncConnection, schema_name: str, *components: Component) -> dict[str, list[int]]:
    """Provision the tenant's schema with `components` (and what they require), up to date.

    Idempotent and safe to call concurrently; returns {component: versions this call applied}.
    """
    schema = validate_schema_name(schema_name)
    if schema == GLOBAL_SCHEMA or schema.startswith("pg_"):
        raise InvalidTenantError(f"schema name {schema!r} is reserved")
    wanted = _order(components)
    dsn = database_key(db)
    # The schema itself is a "component" too: asking for none still creates the schema once.
    names = [c.name for c in wanted] or [""]
    if all((dsn, schema, n) in _current for n in names):
        return {}
    await migrate_global(db)
    applied = await _apply(db, schema, wanted)
    _current.update((dsn, schema, n) for n in names)
    return applied


def forget_applied() -> None:
    """Clear the in-process record of current scopes (tests that drop schemas)."""
    _current.clear()
