"""Versioned, idempotent migrations for the global schema and for each tenant schema.

Every cold start may run them: applied versions are recorded per scope, and a transaction-level
advisory lock per scope makes concurrent runners wait for each other instead of racing.
New migrations are appended to the lists below, never edited once released.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg import sql

from agent_patterns.tenancy import validate_schema_name

if TYPE_CHECKING:
    from psycopg import AsyncConnection

GLOBAL_SCHEMA = "agent_patterns"
GLOBAL_SCOPE = "global"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    # Global migrations ignore the schema argument; tenant ones compose it with sql.Identifier.
    statements: Callable[[str], list[sql.SQL | sql.Composed]]


GLOBAL_MIGRATIONS: list[Migration] = [
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
]

TENANT_MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "runs",
        lambda schema: [
            sql.SQL(
                "CREATE TABLE {s}.runs ("
                " run_id uuid PRIMARY KEY,"
                " kind text NOT NULL,"
                " status text NOT NULL CHECK (status IN ('queued', 'running', 'complete', 'error')),"
                " request jsonb NOT NULL DEFAULT '{{}}'::jsonb,"
                " result jsonb,"
                " error_message text,"
                " created_at timestamptz NOT NULL DEFAULT now(),"
                " updated_at timestamptz NOT NULL DEFAULT now())"
            ).format(s=sql.Identifier(schema)),
            sql.SQL("CREATE INDEX ON {s}.runs (created_at DESC)").format(s=sql.Identifier(schema)),
        ],
    ),
    Migration(
        2,
        "crawl pages",
        lambda schema: [
            sql.SQL(
                "CREATE TABLE {s}.crawl_pages ("
                " run_id uuid NOT NULL REFERENCES {s}.runs (run_id) ON DELETE CASCADE,"
                " position integer NOT NULL,"
                " url text NOT NULL,"
                " final_url text,"
                " status integer,"
                " title text,"
                " depth integer NOT NULL,"
                " links jsonb NOT NULL DEFAULT '[]'::jsonb,"
                " forms jsonb NOT NULL DEFAULT '[]'::jsonb,"
                " PRIMARY KEY (run_id, position))"
            ).format(s=sql.Identifier(schema)),
        ],
    ),
    Migration(3, "documents, chunks and embeddings", lambda schema: _search_tables(schema)),
]


def _search_tables(schema: str) -> list[sql.SQL | sql.Composed]:
    from agent_patterns.config import get_settings

    s = sql.Identifier(schema)
    dim = sql.Literal(get_settings().embedding_dimensions)
    return [
        sql.SQL(
            "CREATE TABLE {s}.documents (id text PRIMARY KEY, metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,"
            " created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(s=s),
        sql.SQL(
            "CREATE TABLE {s}.chunks (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
            " document_id text REFERENCES {s}.documents (id) ON DELETE CASCADE,"
            " position integer NOT NULL DEFAULT 0, content text NOT NULL,"
            " metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,"
            " fts tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED)"
        ).format(s=s),
        sql.SQL("CREATE INDEX ON {s}.chunks (document_id, position)").format(s=s),
        sql.SQL("CREATE INDEX ON {s}.chunks USING gin (fts)").format(s=s),
        sql.SQL("CREATE INDEX ON {s}.chunks USING gin (metadata jsonb_path_ops)").format(s=s),
        sql.SQL(
            "CREATE TABLE {s}.embeddings (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
            " chunk_id uuid NOT NULL UNIQUE REFERENCES {s}.chunks (id) ON DELETE CASCADE,"
            " embedding vector({d}) NOT NULL)"
        ).format(s=s, d=dim),
        # HNSW works from an empty table (IVFFlat would train on no rows); cosine to match `<=>`.
        sql.SQL("CREATE INDEX embeddings_hnsw ON {s}.embeddings USING hnsw (embedding vector_cosine_ops)").format(s=s),
    ]


_BOOTSTRAP: list[sql.SQL | sql.Composed] = [
    sql.SQL("CREATE SCHEMA IF NOT EXISTS agent_patterns"),
    sql.SQL(
        "CREATE TABLE IF NOT EXISTS agent_patterns.schema_migrations ("
        " scope text NOT NULL, version integer NOT NULL, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (scope, version))"
    ),
]

# Scopes known to be current in this execution environment: later calls cost no round trip.
_current: set[tuple[str, str]] = set()


def latest_version(scope: str) -> int:
    return (GLOBAL_MIGRATIONS if scope == GLOBAL_SCOPE else TENANT_MIGRATIONS)[-1].version


async def _apply(db: AsyncConnection, scope: str, migrations: list[Migration], schema: str) -> list[int]:
    applied: list[int] = []
    async with db.transaction():
        # One lock for everything: bootstrap DDL and per-scope work never race each other
        # (CREATE ... IF NOT EXISTS is not safe under concurrency on its own).
        await db.execute("SELECT pg_advisory_xact_lock(hashtextextended('agent_patterns.migrations', 0))")
        for stmt in _BOOTSTRAP:
            await db.execute(stmt)
        if scope != GLOBAL_SCOPE:
            create = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            await db.execute(create)
            await db.execute(
                "INSERT INTO agent_patterns.tenants (schema_name) VALUES (%s) ON CONFLICT DO NOTHING", (schema,)
            )
        cur = await db.execute("SELECT version FROM agent_patterns.schema_migrations WHERE scope = %s", (scope,))
        done = {row[0] for row in await cur.fetchall()}
        for migration in migrations:
            if migration.version in done:
                continue
            for stmt in migration.statements(schema):
                await db.execute(stmt)
            await db.execute(
                "INSERT INTO agent_patterns.schema_migrations (scope, version, name) VALUES (%s, %s, %s)",
                (scope, migration.version, migration.name),
            )
            applied.append(migration.version)
    return applied


def _dsn_key(db: AsyncConnection) -> str:
    info = db.info
    return f"{info.host}:{info.port}/{info.dbname}"


async def migrate_global(db: AsyncConnection) -> list[int]:
    """Bring the global schema up to date; returns the versions this call applied."""
    key = (_dsn_key(db), GLOBAL_SCOPE)
    if key in _current:
        return []
    applied = await _apply(db, GLOBAL_SCOPE, GLOBAL_MIGRATIONS, GLOBAL_SCHEMA)
    _current.add(key)
    return applied


async def create_tenant_schema(db: AsyncConnection, schema_name: str) -> list[int]:
    """Provision (or upgrade) a tenant schema; idempotent and safe to call concurrently."""
    schema = validate_schema_name(schema_name)
    if schema == GLOBAL_SCHEMA or schema.startswith("pg_"):
        from agent_patterns.errors import InvalidTenantError

        raise InvalidTenantError(f"schema name {schema!r} is reserved")
    key = (_dsn_key(db), schema)
    if key in _current:
        return []
    await migrate_global(db)
    applied = await _apply(db, schema, TENANT_MIGRATIONS, schema)
    _current.add(key)
    return applied


def forget_applied() -> None:
    """Clear the in-process record of current scopes (tests that drop schemas)."""
    _current.clear()
