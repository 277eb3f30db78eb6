"""The SQS client (boto3, created once per execution environment) and the local job queue.

On AWS crawl jobs go to CRAWL_QUEUE_URL (webhook deliveries to WEBHOOK_QUEUE_URL). Locally (no
queue URL) the dev server registers a consumer per queue and jobs go to it in-process, in the same
message format the SQS trigger delivers (a delayed one after its delay, from a timer thread).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from agent_patterns.errors import ConfigurationError

_client: Any = None
_local_consumers: dict[str, Callable[[dict[str, Any]], None]] = {}


def sqs_client() -> Any:
    global _client
    if _client is None:
        import boto3

        _client = boto3.client("sqs")
    return _client


def set_local_consumer(consumer: Callable[[dict[str, Any]], None] | None, *, queue: str = "crawl") -> None:
    """Receive `queue`'s jobs in-process instead of through SQS (the dev server's workers)."""
    if consumer is None:
        _local_consumers.pop(queue, None)
    else:
        _local_consumers[queue] = consumer


def local_consumer(queue: str = "crawl") -> Callable[[dict[str, Any]], None] | None:
    return _local_consumers.get(queue)


async def send_job(
    queue_url: str | None, message: dict[str, Any], *, delay_seconds: int = 0, queue: str = "crawl"
) -> None:
    """Send a job to the queue; without a queue URL, to `queue`'s in-process consumer (dev server)."""
    if queue_url:
        body = json.dumps(message, separators=(",", ":"))
        await asyncio.to_thread(
            sqs_client().send_message, QueueUrl=queue_url, MessageBody=body, DelaySeconds=delay_seconds
        )
        return
    consumer = _local_consumers.get(queue)
    if consumer is not None:
        if delay_seconds > 0:
            import threading

            timer = threading.Timer(delay_seconds, consumer, (message,))
            timer.daemon = True
            timer.start()
        else:
            consumer(message)
        return
    variable = f"{queue.upper()}_QUEUE_URL"
    raise ConfigurationError(f"{variable} is not set: {queue} jobs have nowhere to go")


def reset_sqs() -> None:
    global _client
    _client = None
