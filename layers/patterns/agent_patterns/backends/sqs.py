"""The SQS client (boto3, created once per execution environment) and the local job queue.

On AWS crawl jobs go to CRAWL_QUEUE_URL (webhook deliveries to WEBHOOK_QUEUE_URL). Locally (no
queue URL) the dev server registers a consumer per queue and jobs go to it in-process, in the same
message format the SQS trigger delivers (a delayed one after its delay, from a timer thread).

A send given `timeout_s` uses a client of its own whose connect and read each time out after
that many seconds, tried at most twice: a caller that must not wait on an SQS outage (a run's
ending queueing its webhooks, which stay in an outbox until SQS takes them) fails fast instead
of waiting out botocore's defaults (60 s per read, 3 tries).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

from agent_patterns.errors import ConfigurationError

_client: Any = None
_bounded_clients: dict[float, Any] = {}
_bounded_lock = threading.Lock()  # boto3's default session must not create clients concurrently
_local_consumers: dict[str, Callable[[dict[str, Any]], None]] = {}


def sqs_client() -> Any:
    global _client
    if _client is None:
        import boto3

        _client = boto3.client("sqs")
    return _client


def bounded_sqs_client(timeout_s: float) -> Any:
    """An SQS client that gives up quickly: connect and read time out after `timeout_s`, two
    tries in all (botocore's standard retry mode)."""
    client = _bounded_clients.get(timeout_s)
    if client is None:
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"mode": "standard", "total_max_attempts": 2},
        )
        with _bounded_lock:
            client = _bounded_clients.get(timeout_s) or boto3.client("sqs", config=config)
            _bounded_clients[timeout_s] = client
    return client


def set_local_consumer(consumer: Callable[[dict[str, Any]], None] | None, *, queue: str = "crawl") -> None:
    """Receive `queue`'s jobs in-process instead of through SQS (the dev server's workers)."""
    if consumer is None:
        _local_consumers.pop(queue, None)
    else:
        _local_consumers[queue] = consumer


def local_consumer(queue: str = "crawl") -> Callable[[dict[str, Any]], None] | None:
    return _local_consumers.get(queue)


async def send_job(
    queue_url: str | None,
    message: dict[str, Any],
    *,
    delay_seconds: int = 0,
    queue: str = "crawl",
    timeout_s: float | None = None,
) -> None:
    """Send a job to the queue; without a queue URL, to `queue`'s in-process consumer (dev server).
    With `timeout_s`, SQS has that long per try (two tries) before this raises."""
    if queue_url:
        body = json.dumps(message, separators=(",", ":"))
        client = sqs_client() if timeout_s is None else bounded_sqs_client(timeout_s)
        await asyncio.to_thread(client.send_message, QueueUrl=queue_url, MessageBody=body, DelaySeconds=delay_seconds)
        return
    consumer = _local_consumers.get(queue)
    if consumer is not None:
        if delay_seconds > 0:
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
    _bounded_clients.clear()
