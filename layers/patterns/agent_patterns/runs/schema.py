"""The runs table: one row per run, the durable record of its status and result."""

from __future__ import annotations

from psycopg import sql

from agent_patterns.backends.migrations import Component, Migration

RUNS = Component(
    "runs",
    (
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
    ),
)
