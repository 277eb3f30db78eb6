"""The tenant's webhook tables: its signing secret and default endpoints, each event's body and
the outbox of deliveries SQS has not taken yet; and the global list of tenants whose outbox may
hold some (what the sweep visits)."""

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
        Migration(
            2,
            "webhook outbox",
            lambda schema: [
                # One row per event and endpoint from the run's ending until SQS took its
                # delivery message: the sweep queues again the rows left behind.
                sql.SQL(
                    "CREATE TABLE {s}.webhook_outbox ("
                    " event_id text NOT NULL REFERENCES {s}.webhook_events (event_id) ON DELETE CASCADE,"
                    " url text NOT NULL,"
                    " created_at timestamptz NOT NULL DEFAULT now(),"
                    " queued_at timestamptz NOT NULL DEFAULT now(),"  # the last send to SQS began then
                    " sends integer NOT NULL DEFAULT 1,"
                    " last_error text,"
                    " PRIMARY KEY (event_id, url))"
                ).format(s=sql.Identifier(schema)),
                sql.SQL("CREATE INDEX webhook_outbox_queued_at ON {s}.webhook_outbox (queued_at)").format(
                    s=sql.Identifier(schema)
                ),
            ],
        ),
    ),
)

# Global (`ensure_global`): the tenants whose outbox may hold rows. A row is written (and locked)
# in the transaction that adds outbox rows, and removed by the sweep, under its lock, when the
# tenant's outbox is empty: the sweep visits these tenants only.
OUTBOX_TENANTS = Component(
    "webhook_outbox_tenants",
    (
        Migration(
            1,
            "tenants with pending webhook deliveries",
            lambda _schema: [
                sql.SQL(
                    "CREATE TABLE agent_patterns.webhook_outbox_tenants ("
                    " tenant_id text PRIMARY KEY,"
                    " since timestamptz NOT NULL DEFAULT now(),"
                    " touched_at timestamptz NOT NULL DEFAULT now())"
                )
            ],
        ),
    ),
)
