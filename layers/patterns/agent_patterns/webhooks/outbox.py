"""A run's ending becomes webhook deliveries: `runs.events.transition` calls `run_ended` when a
run reaches `complete` or `error` (only when its status changed). The event's body is kept in
the tenant's schema (every retry sends the same bytes) and one delivery message per endpoint
(the run's `webhook_url` and the tenant's default endpoints) goes to the webhook queue:

    {"kind": "webhook", "event_id": "msg_…", "tenant_id": "acme", "url": "https://…", "attempt": 1}
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from agent_patterns.backends.sqs import send_job
from agent_patterns.observability import logger
from agent_patterns.webhooks.settings import webhook_settings
from agent_patterns.webhooks.store import endpoints, save_event
from agent_patterns.webhooks.targets import url_label

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


async def run_ended(tenant_id: str, run_id: str, status: str, payload: dict[str, Any] | None) -> None:
    """Queue the webhooks of a run that has just ended. Never raises: the run's ending stands
    whatever happens here, and a delivery that cannot be queued is logged."""
    if status not in EVENT_TYPES:
        return
    try:
        await _enqueue(tenant_id, run_id, status, payload or {})
    except Exception:
        logger.exception("webhooks of a run's ending could not be queued", extra={"run_id": run_id})


async def _enqueue(tenant_id: str, run_id: str, status: str, payload: dict[str, Any]) -> None:
    from agent_patterns.runs.records import get_run  # runs calls in here: import at use

    record = await get_run(tenant_id, run_id)
    if record is None:
        return
    own = record.request.get("webhook_url")
    urls = list(dict.fromkeys([*([own] if isinstance(own, str) and own else []), *await endpoints(tenant_id)]))
    if not urls:
        return
    event_id = event_id_for(record.run_id, status)
    body = event_body(record.run_id, record.kind, status, payload, datetime.now(UTC))
    await save_event(tenant_id, event_id, record.run_id, EVENT_TYPES[status], body)
    queue_url = webhook_settings().webhook_queue_url
    failed = []
    for url in urls:
        message = {"kind": "webhook", "event_id": event_id, "tenant_id": tenant_id, "url": url, "attempt": 1}
        try:
            await send_job(queue_url, message, queue=QUEUE)
        except Exception as exc:
            failed.append(f"{url_label(url)}: {type(exc).__name__}: {str(exc)[:200]}")
    extra = {"event_id": event_id, "run_id": record.run_id, "endpoints": [url_label(u) for u in urls]}
    if failed:
        logger.error("some webhooks could not be queued", extra={**extra, "failed": failed})
    else:
        logger.info("webhooks queued", extra=extra)
