"""A run's ending becomes webhook deliveries. When a run reaches `complete` or `error`,
`runs.events.transition` prepares its event (`prepare_ending`, before the status change),
records it (`record_ending`) in the status change's own transaction (only when the status
changed), and sends it after the commit (`send_ending`). The event's body is kept in the
tenant's schema (every retry sends the same bytes) and one delivery message per endpoint (the
run's `webhook_url` and the tenant's default endpoints) goes to the webhook queue:

    {"kind": "webhook", "event_id": "msg_…", "tenant_id": "acme", "url": "https://…", "attempt": 1}

It is an outbox: the body and one `webhook_outbox` row per endpoint commit with the run's
ending (a process killed right after it loses nothing) before anything is sent, and a row goes
once SQS has taken its message. A send that fails (SQS down, throttled, unreachable:
WEBHOOK_QUEUE_SEND_TIMEOUT_SECONDS per try, two tries) leaves its row, and so does a send SQS
took whose answer was lost. `sweep_outbox` (with the run reaper, every minute) sends again every
row older than WEBHOOK_OUTBOX_SWEEP_AFTER_SECONDS. A message sent twice is harmless: `delivery`
claims each attempt of an event and endpoint once and never sends after a 2xx.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent_patterns.backends.sqs import send_job
from agent_patterns.observability import logger
from agent_patterns.webhooks.settings import webhook_settings
from agent_patterns.webhooks.store import (
    claim_pending,
    clear_pending,
    endpoints,
    note_pending_error,
    outbox_tenants,
    save_event,
)
from agent_patterns.webhooks.targets import url_label

if TYPE_CHECKING:
    from psycopg import AsyncConnection

EVENT_TYPES = {"complete": "run.complete", "error": "run.error"}
QUEUE = "webhook"  # the local consumer's name (backends.sqs) when WEBHOOK_QUEUE_URL is unset


def event_id_for(run_id: str, status: str) -> str:
    """The event's id (`webhook-id`): one per run ending, the same on every retry, no dots."""
    return f"msg_{uuid.UUID(run_id).hex}_{status}"


def event_body(run_id: str, kind: str, status: str, payload: dict[str, Any], at: datetime) -> str:
    """The JSON body, compact: `{"type", "timestamp", "data": {"run_id", "kind", "status", ...}}`
    with the result summary of a complete run, or the error (message, reason) of a failed one."""
    data: dict[str, Any] = {"run_id": run_id, "kind": kind, "status": status}
    if status == "complete":
        data["result"] = payload
    else:
        data["error"] = {k: payload[k] for k in ("message", "reason") if k in payload}
    stamp = at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"type": EVENT_TYPES[status], "timestamp": stamp, "data": data}, separators=(",", ":"))


@dataclass(frozen=True)
class Ending:
    """A run ending's webhook event, ready to record and send."""

    tenant_id: str
    run_id: str
    event_id: str
    type: str
    body: str
    urls: list[str]


async def prepare_ending(tenant_id: str, run_id: str, status: str, payload: dict[str, Any] | None) -> Ending | None:
    """The event a run's ending sends, or None (not an ending, no endpoint). Never raises: the
    run's ending stands whatever happens here, and a failure is logged."""
    if status not in EVENT_TYPES:
        return None
    from agent_patterns.runs.records import get_run  # runs calls in here: import at use

    try:
        record = await get_run(tenant_id, run_id)
        if record is None:
            return None
        own = record.request.get("webhook_url")
        urls = list(dict.fromkeys([*([own] if isinstance(own, str) and own else []), *await endpoints(tenant_id)]))
    except Exception:
        logger.exception("webhooks of a run's ending could not be prepared", extra={"run_id": run_id})
        return None
    if not urls:
        return None
    event_id = event_id_for(record.run_id, status)
    body = event_body(record.run_id, record.kind, status, payload or {}, datetime.now(UTC))
    return Ending(tenant_id, record.run_id, event_id, EVENT_TYPES[status], body, urls)


async def record_ending(db: AsyncConnection, ending: Ending) -> bool:
    """Write the event and its outbox rows in the caller's transaction (a savepoint: a failure
    here is logged and the run's ending still commits). Never raises; True when recorded."""
    try:
        async with db.transaction():
            await save_event(
                db, ending.tenant_id, ending.event_id, ending.run_id, ending.type, ending.body, ending.urls
            )
    except Exception:
        logger.exception("webhooks of a run's ending could not be recorded", extra={"run_id": ending.run_id})
        return False
    return True


async def send_ending(ending: Ending) -> None:
    """Queue the recorded deliveries (after the commit). Never raises: what SQS does not take
    stays in the outbox for the sweep."""
    try:
        sent, failure = await _send(ending.tenant_id, ending.event_id, ending.urls)
    except Exception:
        logger.exception("webhooks of a run's ending could not be queued", extra={"run_id": ending.run_id})
        return
    extra = {"event_id": ending.event_id, "run_id": ending.run_id, "endpoints": [url_label(u) for u in ending.urls]}
    if failure is not None:
        logger.error(
            "some webhooks could not be queued: they stay in the outbox for the sweep",
            extra={**extra, "queued": len(sent), "failed": failure},
        )
    else:
        logger.info("webhooks queued", extra=extra)


async def _send(tenant_id: str, event_id: str, urls: Sequence[str]) -> tuple[list[str], str | None]:
    """Queue the first attempt of the event to each endpoint, in turn, and take the ones SQS
    took out of the outbox. The first send that fails ends it (SQS is likely down: each other
    send would wait out its timeout too); what was not sent stays in the outbox. Returns the
    endpoints sent to and the failure, if any."""
    settings = webhook_settings()
    sent: list[str] = []
    failure = None
    for url in urls:
        message = {"kind": "webhook", "event_id": event_id, "tenant_id": tenant_id, "url": url, "attempt": 1}
        try:
            await send_job(
                settings.webhook_queue_url, message, queue=QUEUE, timeout_s=settings.webhook_queue_send_timeout_seconds
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
            failure = f"{url_label(url)}: {error}"
            with contextlib.suppress(Exception):
                await note_pending_error(tenant_id, event_id, url, error)
            break
        sent.append(url)
    if sent:
        try:
            await clear_pending(tenant_id, event_id, sent)
        except Exception as exc:  # they were queued: the sweep sends them again, delivery drops the copies
            logger.warning(
                "webhooks queued but still in the outbox",
                extra={"event_id": event_id, "error": f"{type(exc).__name__}: {str(exc)[:200]}"},
            )
    return sent, failure


async def sweep_outbox(*, older_than_s: float | None = None, limit: int = 500) -> dict[str, Any]:
    """Queue again the deliveries still in an outbox whose last send began more than
    `older_than_s` (WEBHOOK_OUTBOX_SWEEP_AFTER_SECONDS) ago: at most `limit` sends, the tenants
    waiting longest first. A send that fails ends the sweep (the next one tries again); a row
    older than WEBHOOK_DELIVERED_TTL_SECONDS is dropped and logged (past it a copy could no
    longer be recognised at delivery). Never raises; returns what it did (safe to log)."""
    settings = webhook_settings()
    older = settings.webhook_outbox_sweep_after_seconds if older_than_s is None else older_than_s
    done: dict[str, Any] = {"requeued": 0, "expired": 0, "failed": None}
    try:
        tenants = await outbox_tenants(limit)
    except Exception as exc:
        done["failed"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        logger.warning("webhook outbox sweep failed", extra=done)
        return done
    left = limit
    for tenant_id in tenants:
        if left <= 0:
            break
        try:
            claimed = await claim_pending(tenant_id, older, settings.webhook_delivered_ttl_seconds, left)
        except Exception as exc:  # e.g. Postgres down: the next sweep tries again
            logger.warning(
                "webhook outbox of a tenant not swept",
                extra={"tenant_id": tenant_id, "error": f"{type(exc).__name__}: {str(exc)[:200]}"},
            )
            continue
        if claimed is None:  # another sweep, or a run's ending, holds it now
            continue
        for event_id, url in claimed.expired:
            logger.error(
                "webhook delivery dropped: SQS never took it",
                extra={"tenant_id": tenant_id, "event_id": event_id, "endpoint": url_label(url)},
            )
        done["expired"] += len(claimed.expired)
        left -= len(claimed.due)
        for event_id in dict.fromkeys(e for e, _ in claimed.due):
            sent, failure = await _send(tenant_id, event_id, [u for e, u in claimed.due if e == event_id])
            done["requeued"] += len(sent)
            if failure is not None:
                done["failed"] = failure
                logger.warning("webhook outbox sweep stopped: a send failed", extra=done)
                return done
    if done["requeued"] or done["expired"]:
        logger.info("webhook outbox swept", extra=done)
    return done
