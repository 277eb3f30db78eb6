"""The tenant's webhook tables: its signing secret and default endpoints, and each event's body."""

from __future__ import annotations

from psycopg import sql

from agent_patterns.backends.migrations import Component, Migration

WEBHOOKS = Component(
    "webhooks",
    (
        Migration(
            1,
            "webhook config and events",
            lambda schema: [
                # One row per tenant: its signing secret (sealed), the one it replaced (signed
                # with too for a while after a rotation) and its default endpoints.
                sql.SQL(
                    "CREATE TABLE {s}.webhook_config ("
                    " id boolean PRIMARY KEY DEFAULT true CHECK (id),"
                    " secret_sealed text,"
                    " previous_secret_sealed text,"
                    " rotated_at timestamptz,"
                    " urls jsonb NOT NULL DEFAULT '[]'::jsonb,"
                    " updated_at timestamptz NOT NULL DEFAULT now())"
                ).format(s=sql.Identifier(schema)),
                # The exact body of each event, so every retry sends the same bytes.
                sql.SQL(
                    "CREATE TABLE {s}.webhook_events ("
                    " event_id text PRIMARY KEY,"
                    " run_id uuid NOT NULL,"
                    " type text NOT NULL,"
                    " body text NOT NULL,"
                    " created_at timestamptz NOT NULL DEFAULT now())"
                ).format(s=sql.Identifier(schema)),
            ],
        ),
    ),
)
