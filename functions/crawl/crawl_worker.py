"""crawl worker (container image with Chromium): one crawl step per SQS message.

Messages come from the crawl API (`{"kind": "crawl", ...}`), from the worker itself
(continuations) and from EventBridge schedules (`{"kind": "schedule", ...}`, and every minute
`{"kind": "reap"}`, which ends runs whose worker died and re-queues the webhook deliveries SQS
never took). Failed records are reported
individually (ReportBatchItemFailures); after 3 receives SQS moves them to the DLQ.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.persistence.cache import CachePersistenceLayer

from agent_patterns.backends.redis import redis_url
from agent_patterns.crawl.jobs import process_job
from agent_patterns.observability import logger

processor = BatchProcessor(event_type=EventType.SQS)
# Idempotency records live in the same Redis: a redelivered message for a step that ran (or is
# running) never starts a second crawl.
persistence = CachePersistenceLayer(url=redis_url())
idempotency = IdempotencyConfig(event_key_jmespath="key", expires_after_seconds=7 * 86_400)
_loop = asyncio.new_event_loop()  # one loop per execution environment; backends bind to it
_context: Any = None


def _remaining_ms() -> int:
    return int(_context.get_remaining_time_in_millis()) if _context is not None else 900_000


@idempotent_function(  # type: ignore[untyped-decorator]
    data_keyword_argument="job", persistence_store=persistence, config=idempotency
)
def run_job(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = _loop.run_until_complete(process_job(job["message"], _remaining_ms))
    logger.info("crawl step done", extra=result)
    return result


def record_handler(record: SQSRecord) -> dict[str, Any]:
    message = json.loads(record.body)
    if not isinstance(message, dict):
        raise ValueError("a crawl job message is a JSON object")
    if message.get("kind") in ("schedule", "reap"):  # each delivery of a tick runs once; every tick runs
        key = f"{message['kind']}:{record.message_id}"
    else:
        key = f"crawl:{message.get('run_id')}:{message.get('step', 0)}"
    result: dict[str, Any] = run_job(job={"key": key, "message": message})
    return result


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _context
    _context = context
    idempotency.register_lambda_context(context)
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
