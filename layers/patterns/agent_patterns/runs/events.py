"""The run event log: each run's events in a Redis Stream `run:{run_id}`.

Stream ids are the event ids (monotonic per run), so "everything after id X" is exact: a reader
that carries its last id forward never misses an event and never sees one twice. Streams are
capped (MAXLEN ~) and expire, so an abandoned run cannot grow Redis without bound.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from agent_patterns.backends import get_redis
from agent_patterns.config import get_settings
from agent_patterns.errors import BadRequestError, ValidationError
from agent_patterns.runs.records import (
    RUN_STATUSES,
    TERMINAL_STATUSES,
    RunStatus,
    delete_run,
    insert_run,
    parse_run_id,
    update_run,
)

PUBLISHED_TYPES = frozenset(RUN_STATUSES)  # a run event is a status change; heartbeats are SSE-only
TERMINAL_TYPES = TERMINAL_STATUSES


@dataclass(frozen=True)
class RunEvent:
    id: str
    type: str
    run_id: str
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @cached_property
    def wire(self) -> str:
        """The wire JSON, serialized once however many streams carry the event."""
        return json.dumps({"type": self.type, "run_id": self.run_id, "payload": self.payload}, separators=(",", ":"))

    def data(self) -> str:
        """The wire JSON: `{"type","run_id","payload"}`, compact, one line."""
        return self.wire


def stream_key(run_id: str) -> str:
    return f"run:{parse_run_id(run_id)}"


def meta_key(run_id: str) -> str:
    return f"run:{parse_run_id(run_id)}:meta"


def event_of(run_id: str, event_id: str, fields: dict[str, str]) -> RunEvent:
    """The event a stream entry holds."""
    return RunEvent(event_id, fields.get("type", ""), run_id, json.loads(fields.get("payload") or "{}"))


EVENT_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?", re.ASCII)


def check_event_id(event_id: str) -> str:
    """The event id as given, or a 400 saying what an event id looks like (Redis would refuse
    anything else, and a resume position is a request header, not a field of a body)."""
    match = EVENT_ID.fullmatch(event_id)
    if match is None or any(int(part) >= 2**64 for part in match.groups() if part is not None):
        shown = event_id if len(event_id) <= 40 else event_id[:40] + "..."
        raise BadRequestError(f"invalid event id {shown!r}: expected '<ms>-<seq>' as sent in 'id:' lines")
    return event_id


async def publish(run_id: str, type: str, payload: dict[str, Any] | None = None) -> str:
    """Append an event to the run's stream; returns its event id."""
    if type not in PUBLISHED_TYPES:
        raise ValidationError(f"invalid event type {type!r}: one of {', '.join(sorted(PUBLISHED_TYPES))}")
    settings = get_settings()
    key = stream_key(run_id)
    fields = {"type": type, "payload": json.dumps(payload or {}, separators=(",", ":"))}
    async with get_redis().pipeline(transaction=True) as pipe:
        pipe.xadd(key, fields, maxlen=settings.run_events_maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.expire(key, settings.run_events_ttl_seconds)
        pipe.expire(meta_key(run_id), settings.run_events_ttl_seconds)
        event_id, *_ = await pipe.execute()
    return str(event_id)


async def replay(run_id: str, after: str | None = None, *, count: int | None = None) -> list[RunEvent]:
    """The run's events after `after` (exclusive), or from the start; oldest first."""
    rid = parse_run_id(run_id)
    start = "-" if after is None else "(" + check_event_id(after)
    rows: list[tuple[str, dict[str, str]]] = await get_redis().xrange(  # type: ignore[assignment]
        stream_key(rid), min=start, max="+", count=count
    )
    return [event_of(rid, event_id, fields) for event_id, fields in rows]


async def read_after(run_id: str, after: str, *, block_ms: int, count: int = 500) -> list[RunEvent]:
    """Events after `after`, waiting up to `block_ms` for the first; [] when none arrived."""
    rid = parse_run_id(run_id)
    after = "0-0" if after in ("", "0") else check_event_id(after)
    reply: list[tuple[str, list[tuple[str, dict[str, str]]]]] = await get_redis().xread(  # type: ignore[assignment]
        {stream_key(rid): after}, count=count, block=block_ms
    )
    if not reply:
        return []
    _key, rows = reply[0]
    return [event_of(rid, event_id, fields) for event_id, fields in rows]


async def follow(run_id: str, after: str | None = None, *, block_ms: int = 1000) -> AsyncIterator[RunEvent]:
    """Replay after `after`, then follow new events with one cursor until a terminal event."""
    cursor = after or "0-0"
    while True:
        for event in await read_after(run_id, cursor, block_ms=block_ms):
            cursor = event.id
            yield event
            if event.terminal:
                return


async def create_run(tenant_id: str, kind: str, request: dict[str, Any] | None = None) -> str:
    """Record a queued run (Postgres), note its owner (Redis), publish `queued`; returns run_id."""
    run_id = await insert_run(tenant_id, kind, request)
    try:
        await get_redis().hset(meta_key(run_id), mapping={"tenant_id": tenant_id, "kind": kind})
        await publish(run_id, "queued", {"kind": kind})  # also sets the TTL of the stream and the meta key
    except BaseException:
        await delete_run(tenant_id, run_id)  # no run without its event log: no orphan left `queued`
        raise
    return run_id


async def run_owner(run_id: str) -> str | None:
    """The tenant that owns a run, or None for an unknown (or expired) run."""
    owner = await get_redis().hget(meta_key(run_id), "tenant_id")
    return None if owner is None else str(owner)


async def transition(
    tenant_id: str,
    run_id: str,
    status: RunStatus,
    payload: dict[str, Any] | None = None,
    *,
    result: dict[str, Any] | None = None,
    error_message: str | None = None,
) -> str:
    """Move a run to `status` in Postgres and publish the matching event; returns the event id."""
    await update_run(tenant_id, run_id, status, result=result, error_message=error_message)
    return await publish(run_id, status, payload)
