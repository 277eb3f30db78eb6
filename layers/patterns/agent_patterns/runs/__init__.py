"""Runs: one API for a run's durable record (Postgres) and its live event log (Redis Streams)."""

from agent_patterns.runs.events import (
    RunEvent,
    create_run,
    follow,
    publish,
    read_after,
    replay,
    run_owner,
    transition,
)
from agent_patterns.runs.records import (
    RUN_STATUSES,
    TERMINAL_STATUSES,
    RunRecord,
    RunStatus,
    get_run,
    insert_run,
    parse_run_id,
    update_run,
)

__all__ = [
    "RUN_STATUSES",
    "TERMINAL_STATUSES",
    "RunEvent",
    "RunRecord",
    "RunStatus",
    "create_run",
    "follow",
    "get_run",
    "insert_run",
    "parse_run_id",
    "publish",
    "read_after",
    "replay",
    "run_owner",
    "transition",
    "update_run",
]
