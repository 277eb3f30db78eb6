"""webhook function: one webhook delivery attempt per SQS message.

Messages come from run endings (`runs.events.transition`) and from this function itself (the
next attempt, with a delay). Each attempt is logged without its secret or signature; failed
records (a backend down, an attempt in hand elsewhere) are reported individually
(ReportBatchItemFailures) and come back, and after their receives SQS dead-letters them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from agent_patterns import snapstart
from agent_patterns.observability import logger
from agent_patterns.webhooks.delivery import deliver

processor = BatchProcessor(event_type=EventType.SQS)
_loop = asyncio.new_event_loop()  # one loop per execution environment; backends bind to it


def record_handler(record: SQSRecord) -> dict[str, Any]:
    message = json.loads(record.body)
    if not isinstance(message, dict):
        raise ValueError("a webhook delivery message is a JSON object")
    result: dict[str, Any] = _loop.run_until_complete(deliver(message))
    if result["outcome"] in ("retry", "dead-lettered"):
        logger.warning("webhook not delivered", extra=result)
    else:
        logger.info("webhook delivery", extra=result)
    return result


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)


# SnapStart (template.yaml): the clients are loaded before the snapshot, nothing connects; after a
# restore the Redis and Postgres clients (their sockets are dead) are dropped and the PRNG reseeded.
snapstart.register(lambda: snapstart.preload(snapstart.BACKEND_MODULES), snapstart.reset_after_restore)
