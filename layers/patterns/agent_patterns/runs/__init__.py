"""Runs: one API for a run's durable record (Postgres), its live event log (Redis Streams) and
its lease (a run whose worker died is ended, not left running)."""

from agent_patterns.runs.events import (
    RunEvent,
    checkpoint_key,
    create_run,
    follow,
    publish,
    read_after,
    replay,
    run_owner,
    transition,
)
from agent_patterns.runs.leases import (
    Lease,
    lease_deadline,
    open_lease,
    reap_expired_runs,
    reap_if_expired,
    release_lease,
    renew_lease,
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
    "Lease",
    "RunEvent",
    "RunRecord",
    "RunStatus",
    "checkpoint_key",
    "create_run",
    "follow",
    "get_run",
    "insert_run",
    "lease_deadline",
    "open_lease",
    "parse_run_id",
    "publish",
    "read_after",
    "reap_expired_runs",
    "reap_if_expired",
    "release_lease",
    "renew_lease",
    "replay",
    "run_owner",
    "transition",
    "update_run",
]
