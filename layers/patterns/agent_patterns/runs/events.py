"""The run event log: each run's events in a Redis Stream `run:{run_id}`.

Stream ids are the event ids (monotonic per run), so "everything after id X" is exact: a reader
that carries its last id forward never misses an event and never sees one twice. Streams are
capped (MAXLEN ~) and expire, so an abandoned run cannot grow Redis without bound.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from agent_patterns.backends import connection, get_redis
from agent_patterns.backends.redis import LuaScript
from agent_patterns.config import get_settings
from agent_patterns.errors import BadRequestError, RunEndedError, ValidationError
from agent_patterns.runs import leases
from agent_patterns.runs.records import (
    RUN_STATUSES,
    TERMINAL_STATUSES,
    RunStatus,
    delete_run,
    insert_run,
    parse_run_id,
    update_run,
)

if TYPE_CHECKING:
    from psycopg import AsyncConnection

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


def checkpoint_key(run_id: str) -> str:
    """A run's saved state between the steps of a continued run (the crawl's frontier)."""
    return f"run:{parse_run_id(run_id)}:checkpoint"


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


# Append an event unless the stream already ends with a terminal one: a worker's progress report
# racing a cancel or a reap never lands after the run's last event (streams end at a terminal
# event, and a reconnecting client is told the run is over by looking at the last one).
# KEYS: stream, meta; ARGV: maxlen, ttl, type, payload, then the terminal types.
_PUBLISH = LuaScript("""
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if last then
  local fields = last[2]
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'type' then
      for j = 5, #ARGV do
        if fields[i + 1] == ARGV[j] then return false end
      end
    end
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[3], 'payload', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return id
""")


async def publish(run_id: str, type: str, payload: dict[str, Any] | None = None) -> str:
    """Append an event to the run's stream; returns its event id. RunEndedError when the stream
    has already ended: after `complete` or `error` nothing more is appended."""
    if type not in PUBLISHED_TYPES:
        raise ValidationError(f"invalid event type {type!r}: one of {', '.join(sorted(PUBLISHED_TYPES))}")
    settings = get_settings()
    event_id = await _PUBLISH(
        [stream_key(run_id), meta_key(run_id)],
        [
            settings.run_events_maxlen,
            settings.run_events_ttl_seconds,
            type,
            json.dumps(payload or {}, separators=(",", ":")),
            *sorted(TERMINAL_TYPES),
        ],
    )
    if event_id is None:
        raise RunEndedError(f"run {parse_run_id(run_id)} has already ended: no {type} event after its last one")
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
    """Record a queued run (Postgres), note its owner (Redis), publish `queued`, and give it
    RUN_QUEUED_LEASE_SECONDS to be picked up by a worker (`runs.leases`); returns run_id."""
    run_id = await insert_run(tenant_id, kind, request)
    try:
        await get_redis().hset(meta_key(run_id), mapping={"tenant_id": tenant_id, "kind": kind})
        await leases.open_lease(tenant_id, run_id, get_settings().run_queued_lease_seconds)
        await publish(run_id, "queued", {"kind": kind})  # also sets the TTL of the stream and the meta key
    except BaseException:
        await delete_run(tenant_id, run_id)  # no run without its event log: no orphan left `queued`
        with contextlib.suppress(Exception):
            await leases.release_lease(tenant_id, run_id)
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
    in_transaction: Callable[[AsyncConnection], Awaitable[None]] | None = None,
) -> str | None:
    """Move a run to `status` in Postgres, then publish the matching event; returns the event id.

    Returns None, and publishes nothing, when the run had already ended (`complete` or `error`
    are final: a worker finishing after a cancel or a reap changes nothing). `in_transaction`
    runs in the status change's transaction, only when the status changes (a crawl's pages
    commit with `complete`). A terminal status also drops the run's lease and checkpoint, and
    one that changed the status records the run's webhooks in the same transaction and queues
    them after it (`webhooks.outbox`)."""
    ending = None
    recorded = False
    if status in TERMINAL_STATUSES:
        from agent_patterns.webhooks import outbox

        ending = await outbox.prepare_ending(tenant_id, run_id, status, payload)
    if in_transaction is None and ending is None:
        changed = await update_run(tenant_id, run_id, status, result=result, error_message=error_message)
    else:
        async with connection() as db, db.transaction():
            changed = await update_run(tenant_id, run_id, status, result=result, error_message=error_message, db=db)
            if changed and in_transaction is not None:
                await in_transaction(db)
            if changed and ending is not None:  # its webhooks commit with it: a crash loses none
                recorded = await outbox.record_ending(db, ending)
    event_id = None
    if changed:
        with contextlib.suppress(RunEndedError):  # only a stream someone else ended (never by transition)
            event_id = await publish(run_id, status, payload)
    if status in TERMINAL_STATUSES:  # ended now or before: nothing is left to lease or resume
        async with get_redis().pipeline(transaction=False) as pipe:
            pipe.zrem(leases.LEASES_KEY, leases.lease_member(tenant_id, run_id))
            pipe.delete(checkpoint_key(run_id))
            await pipe.execute()
    if changed and ending is not None and recorded:  # ended now: its webhooks go out (never raises)
        await outbox.send_ending(ending)
    return event_id
