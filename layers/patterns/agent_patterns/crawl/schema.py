"""The crawl_pages table: the pages a crawl run found, in crawl order, each with its main content
as Markdown, its language and the sha256 of that Markdown (v2)."""

from __future__ import annotations

from psycopg import sql

from agent_patterns.backends.migrations import Component, Migration
from agent_patterns.runs.schema import RUNS

CRAWL = Component(
    "crawl",
    (
        Migration(
            1,
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
        Migration(
            2,
            "page markdown, language and content hash",
            lambda schema: [
                sql.SQL(
                    "ALTER TABLE {s}.crawl_pages"
                    " ADD COLUMN IF NOT EXISTS markdown text,"
                    " ADD COLUMN IF NOT EXISTS lang text,"
                    " ADD COLUMN IF NOT EXISTS content_hash text"
                ).format(s=sql.Identifier(schema)),
            ],
        ),
    ),
    requires=(RUNS,),
)
