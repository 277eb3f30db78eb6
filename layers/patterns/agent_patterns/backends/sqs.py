"""The SQS client (boto3, created once per execution environment) and the local job queue.

On AWS crawl jobs go to CRAWL_QUEUE_URL. Locally (no queue URL) the dev server registers a
consumer and jobs go to it in-process, in the same message format the SQS trigger delivers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from agent_patterns.errors import ConfigurationError

_client: Any = None
_local_consumer: Callable[[dict[str, Any]], None] | None = None


def sqs_client() -> Any:
    global _client
    if _client is None:
        import boto3

        _client = boto3.client("sqs")
    return _client


def set_local_consumer(consumer: Callable[[dict[str, Any]], None] | None) -> None:
    """Receive jobs in-process instead of through SQS (the dev server's crawl worker)."""
    global _local_consumer
    _local_consumer = consumer


async def send_job(queue_url: str | None, message: dict[str, Any], *, delay_seconds: int = 0) -> None:
    """Send a job to the queue; without a queue URL, to the in-process consumer (dev server)."""
    if queue_url:
        body = json.dumps(message, separators=(",", ":"))
        await asyncio.to_thread(
            sqs_client().send_message, QueueUrl=queue_url, MessageBody=body, DelaySeconds=delay_seconds
        )
        return
    if _local_consumer is not None:
        _local_consumer(message)
        return
    raise ConfigurationError("CRAWL_QUEUE_URL is not set: crawl jobs have nowhere to go")


def reset_sqs() -> None:
    global _client
    _client = None
