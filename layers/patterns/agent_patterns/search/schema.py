"""The search tables: documents, their chunks (with full-text vectors) and chunk embeddings."""

from __future__ import annotations

from psycopg import sql

from agent_patterns.backends.migrations import Component, Migration, Statements
from agent_patterns.search.settings import search_settings


def _tables(schema: str) -> Statements:
    s = sql.Identifier(schema)
    settings = search_settings()
    dim = sql.Literal(settings.embedding_dimensions)
    storage = sql.SQL(settings.embedding_storage)  # a Literal: "vector" or "halfvec"
    opclass = sql.SQL(f"{settings.embedding_storage}_cosine_ops")
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
            " embedding {t}({d}) NOT NULL)"
        ).format(s=s, t=storage, d=dim),
        # HNSW works from an empty table (IVFFlat would train on no rows); cosine to match `<=>`.
        sql.SQL("CREATE INDEX embeddings_hnsw ON {s}.embeddings USING hnsw (embedding {o})").format(s=s, o=opclass),
    ]


SEARCH = Component("search", (Migration(1, "documents, chunks and embeddings", _tables),))
