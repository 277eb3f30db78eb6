"""The webhook outbox: a run's ending records its deliveries in Postgres before it queues them,
a delivery SQS did not take (down, unreachable, its answer lost) stays there, and the sweep (with
the run reaper) queues it again; the receiver still gets exactly one signed call.

SQS here is moto's, served over real HTTP on 127.0.0.1 (moto's own server needs Flask), and the
functions reach it through `tests/fault_proxy.py`: the faults are real connection faults.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest
from botocore.compat import HTTPHeaders
from moto.core.botocore_stubber import BotocoreStubber
from standardwebhooks import Webhook

from agent_patterns.backends import connection
from agent_patterns.backends.sqs import reset_sqs, set_local_consumer
from agent_patterns.config import reset_settings
from agent_patterns.runs import events
from agent_patterns_dev.gateway import LocalLambdaContext, load_function, sqs_event
from tests.conftest import tenant_rows
from tests.fault_proxy import FaultProxy
from tests.functions import test_webhooks
from tests.functions.test_webhooks import SUMMARY, Receiver, lambda_event, run_handler

receiver_server = test_webhooks.receiver_server  # the webhook tests' receiver (fixtures)
receiver = test_webhooks.receiver

SEND = b"AmazonSQS.SendMessage"  # the X-Amz-Target header of a SendMessage request (JSON protocol)


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # the proxy's resets are the test
            super().handle_error(request, client_address)


class MotoSqsServer:
    """moto's in-memory SQS behind a plain HTTP server on 127.0.0.1 (what `moto_server` does)."""

    def __init__(self) -> None:
        stubber = BotocoreStubber()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = HTTPHeaders()
                for name, value in self.headers.items():
                    headers[name] = value
                request = AWSPreparedRequest(
                    "POST", "https://sqs.us-east-1.amazonaws.com" + self.path, headers, body, False
                )
                answer = stubber.process_request(request)
                assert answer is not None
                status, out_headers, out = answer
                raw = out.encode() if isinstance(out, str) else bytes(out)
                self.send_response(status)
                for name, value in out_headers.items():
                    if name.lower() not in ("content-length", "server", "date"):
                        self.send_header(name, str(value))
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def sqs_server() -> Iterator[MotoSqsServer]:
    server = MotoSqsServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@dataclass
class Sqs:
    proxy: FaultProxy  # what the functions reach SQS through
    client: Any  # the test's own client, straight to the server
    queue_url: str

    def messages(self) -> list[dict[str, Any]]:
        """Receive (and delete) everything the queue holds now."""
        found: list[dict[str, Any]] = []
        receive = {"QueueUrl": self.queue_url, "MaxNumberOfMessages": 10}
        while batch := self.client.receive_message(**receive).get("Messages", []):
            found += batch
            for m in batch:
                self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return found


@pytest.fixture
async def outbox_swept_alone() -> AsyncIterator[None]:
    """The sweep visits every tenant on its list: this test's sweeps see only its own tenants."""

    async def forget() -> None:
        async with connection() as db:
            await db.execute("DELETE FROM agent_patterns.webhook_outbox_tenants")

    from agent_patterns.webhooks.store import outbox_tenants

    await outbox_tenants(1)  # the global table exists
    await forget()
    yield
    await forget()


@pytest.fixture
def sqs(
    sqs_server: MotoSqsServer, receiver: Receiver, settings_env: pytest.MonkeyPatch, outbox_swept_alone: None
) -> Iterator[Sqs]:
    settings_env.setenv("AWS_ACCESS_KEY_ID", "testing")
    settings_env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings_env.delenv("AWS_SESSION_TOKEN", raising=False)
    client = boto3.client("sqs", endpoint_url=sqs_server.url)
    queue_url = client.create_queue(QueueName=f"webhooks-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    with FaultProxy("127.0.0.1", sqs_server.port) as proxy:
        settings_env.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{proxy.port}")
        settings_env.setenv("WEBHOOK_QUEUE_URL", queue_url)
        settings_env.setenv("WEBHOOK_OUTBOX_SWEEP_AFTER_SECONDS", "30")  # rows come due by `age_outbox`
        reset_settings()
        reset_sqs()
        try:
            yield Sqs(proxy, client, queue_url)
        finally:
            reset_sqs()
            client.delete_queue(QueueUrl=queue_url)


@pytest.fixture
def tenant() -> str:
    return f"wo{uuid.uuid4().hex[:10]}"


async def age_outbox(tenant: str, seconds: int = 60) -> None:
    """Make the tenant's pending rows due for the sweep, as if their last send began `seconds` ago
    (no sleeping past WEBHOOK_OUTBOX_SWEEP_AFTER_SECONDS on a loaded machine)."""
    from psycopg import sql

    async with connection() as db:
        await db.execute(
            sql.SQL("UPDATE {}.webhook_outbox SET queued_at = now() - make_interval(secs => %s)").format(
                sql.Identifier(f"tenant_{tenant}")
            ),
            (seconds,),
        )


async def outbox(tenant: str) -> list[tuple[str, str, int, str | None]]:
    """The tenant's outbox rows (event id, url, sends, last error), from Postgres itself."""
    from psycopg import sql

    if not await tenant_rows(tenant, "webhook_outbox"):
        return []
    async with connection() as db:
        cur = await db.execute(
            sql.SQL("SELECT event_id, url, sends, last_error FROM {}.webhook_outbox ORDER BY url").format(
                sql.Identifier(f"tenant_{tenant}")
            )
        )
        return [(str(r[0]), str(r[1]), int(r[2]), r[3]) for r in await cur.fetchall()]


async def on_sweep_list(tenant: str) -> bool:
    async with connection() as db:
        cur = await db.execute("SELECT 1 FROM agent_patterns.webhook_outbox_tenants WHERE tenant_id = %s", (tenant,))
        return await cur.fetchone() is not None


async def reap_tick() -> dict[str, Any]:
    """The every-minute `{"kind": "reap"}` message, through the crawl worker's SQS handler."""
    worker: Any = load_function("crawl", "crawl_worker")
    response = await asyncio.to_thread(worker.handler, sqs_event({"kind": "reap"}), LocalLambdaContext("crawl-worker"))
    assert response == {"batchItemFailures": []}
    return dict(response)


async def deliver_all(sqs: Sqs) -> list[dict[str, Any]]:
    """What Lambda's poller does with the queue: each message to the webhook function."""
    received = sqs.messages()
    queue_arn = "arn:aws:sqs:us-east-1:123456789012:webhooks"
    for message in received:
        assert await run_handler(lambda_event([message], queue_arn)) == {"batchItemFailures": []}
    return [json.loads(m["Body"]) for m in received]


async def secret_of(tenant: str) -> str:
    from agent_patterns.webhooks.store import secret_info

    secret: str = (await secret_info(tenant))["secret"]
    return secret


async def test_a_delivery_sqs_refused_stays_in_the_outbox_and_the_reap_tick_queues_it_again(
    sqs: Sqs, receiver: Receiver, tenant: str
) -> None:
    run_id = await events.create_run(tenant, "crawl", {"url": "https://example.com/", "webhook_url": receiver.url})
    event_id = f"msg_{uuid.UUID(run_id).hex}_complete"
    sqs.proxy.refuse()  # SQS is down: every connection is reset
    assert await events.transition(tenant, run_id, "complete", SUMMARY, result=SUMMARY) is not None
    assert sqs.proxy.stats.refused >= 1  # the send was tried, through the proxy
    assert sqs.messages() == [] and receiver.requests == []
    ((pending_event, pending_url, sends, error),) = await outbox(tenant)
    assert (pending_event, pending_url, sends) == (event_id, receiver.url, 1)
    assert error is not None  # why it is still there
    assert await on_sweep_list(tenant)

    await reap_tick()  # SQS still down, the row not due yet: nothing moves
    assert sqs.messages() == [] and len(await outbox(tenant)) == 1

    sqs.proxy.restore()  # SQS is back
    await reap_tick()  # younger than WEBHOOK_OUTBOX_SWEEP_AFTER_SECONDS (30 s): still waiting
    assert sqs.messages() == [] and len(await outbox(tenant)) == 1
    await age_outbox(tenant)
    await reap_tick()
    assert await outbox(tenant) == []
    delivered = await deliver_all(sqs)
    assert delivered == [
        {"kind": "webhook", "event_id": event_id, "tenant_id": tenant, "url": receiver.url, "attempt": 1}
    ]
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.headers["webhook-id"] == event_id
    payload = Webhook(await secret_of(tenant)).verify(request.body, request.headers)
    assert payload["data"] == {"run_id": run_id, "kind": "crawl", "status": "complete", "result": SUMMARY}
    await reap_tick()  # an empty outbox takes the tenant off the sweep's list
    assert not await on_sweep_list(tenant)
    assert sqs.messages() == [] and len(receiver.requests) == 1


async def test_a_process_that_dies_right_after_the_ending_commits_loses_no_webhook(
    sqs: Sqs, receiver: Receiver, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox rows commit with the status change: killed at the very next step (publishing
    the event), before anything was queued, the run is complete and its webhook waits in the
    outbox; the next reap tick delivers it once."""
    from agent_patterns.runs.records import get_run

    run_id = await events.create_run(tenant, "crawl", {"url": "https://example.com/", "webhook_url": receiver.url})
    seen_at_death: list[Any] = []

    async def dies(*args: object, **kwargs: object) -> str:
        seen_at_death.append(await outbox(tenant))  # what a process killed here leaves behind
        raise asyncio.CancelledError

    monkeypatch.setattr(events, "publish", dies)
    with pytest.raises(asyncio.CancelledError):
        await events.transition(tenant, run_id, "complete", SUMMARY, result=SUMMARY)
    record = await get_run(tenant, run_id)
    assert record is not None and record.status == "complete"
    assert [row[:3] for row in seen_at_death[0]] == [(f"msg_{uuid.UUID(run_id).hex}_complete", receiver.url, 1)]
    assert sqs.messages() == [] and receiver.requests == []
    await age_outbox(tenant)
    await reap_tick()
    await deliver_all(sqs)
    assert len(receiver.requests) == 1 and await outbox(tenant) == []


async def test_a_webhook_that_cannot_be_recorded_does_not_undo_the_runs_ending(
    sqs: Sqs, receiver: Receiver, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording runs in a savepoint of the status change: its failure is logged, the ending
    commits, and nothing half-written is left."""
    from agent_patterns.runs.records import get_run
    from agent_patterns.webhooks import outbox as webhook_outbox

    async def broken(db: Any, *args: object) -> None:
        await db.execute("SELECT 1/0")  # fails inside the transaction, as a real write would

    monkeypatch.setattr(webhook_outbox, "save_event", broken)
    run_id = await events.create_run(tenant, "crawl", {"url": "https://example.com/", "webhook_url": receiver.url})
    assert await events.transition(tenant, run_id, "complete", SUMMARY, result=SUMMARY) is not None
    record = await get_run(tenant, run_id)
    assert record is not None and record.status == "complete"
    assert await outbox(tenant) == [] and sqs.messages() == []


async def test_a_send_sqs_took_but_whose_answer_was_lost_is_delivered_once(
    sqs: Sqs, receiver: Receiver, tenant: str
) -> None:
    from agent_patterns.webhooks.outbox import sweep_outbox

    run_id = await events.create_run(tenant, "crawl", {"url": "https://example.com/", "webhook_url": receiver.url})
    event_id = f"msg_{uuid.UUID(run_id).hex}_error"
    sqs.proxy.drop_reply_after_execution(SEND)  # SQS stores each message, its answer never arrives
    await events.transition(tenant, run_id, "error", {"message": "boom"}, error_message="boom")
    assert sqs.proxy.stats.dropped == 2  # the send and botocore's one retry: both taken by SQS
    assert [row[:3] for row in await outbox(tenant)] == [(event_id, receiver.url, 1)]  # not known to be queued

    sqs.proxy.clear_faults()
    await age_outbox(tenant)
    assert await sweep_outbox() == {"requeued": 1, "expired": 0, "failed": None}
    assert await outbox(tenant) == []
    queued = await deliver_all(sqs)
    assert len(queued) == 3 and {m["event_id"] for m in queued} == {event_id}  # three copies in SQS ...
    assert len(receiver.requests) == 1  # ... one call at the receiver
    assert Webhook(await secret_of(tenant)).verify(receiver.requests[0].body, receiver.requests[0].headers)


async def test_a_run_ends_quickly_while_sqs_is_blackholed(
    sqs: Sqs, receiver: Receiver, tenant: str, settings_env: pytest.MonkeyPatch
) -> None:
    """Every send is bounded (WEBHOOK_QUEUE_SEND_TIMEOUT_SECONDS per try, two tries) and the
    first that fails ends the sending: a run with three endpoints ends in about one bound."""
    from agent_patterns.webhooks.store import set_endpoints

    urls = [receiver.url + "/a", receiver.url + "/b"]
    await set_endpoints(tenant, urls)
    run_id = await events.create_run(
        tenant, "crawl", {"url": "https://example.com/", "webhook_url": receiver.url + "/own"}
    )
    sqs.proxy.blackhole()  # a partition: requests hang, nothing answers
    started = time.monotonic()
    assert await events.transition(tenant, run_id, "complete", SUMMARY, result=SUMMARY) is not None
    elapsed = time.monotonic() - started
    print(f"run end with SQS blackholed: {elapsed:.2f} s")  # the figure (pytest -s)
    # 2 tries x 2 s, and botocore's backoff between them (at most 1 s), and Postgres; botocore's
    # defaults waited 180 s here. The bound is loose: a loaded CI machine must not fail it.
    assert 2.0 <= elapsed < 20
    assert [row[1] for row in await outbox(tenant)] == sorted([receiver.url + "/own", *urls])
    sqs.proxy.cut_all()  # the held requests are lost with the partition
    sqs.proxy.restore()
    await age_outbox(tenant)
    await reap_tick()
    assert await outbox(tenant) == []
    await deliver_all(sqs)
    assert sorted(r.path for r in receiver.requests) == ["/a", "/b", "/own"]


async def test_the_dev_servers_worker_sweeps_the_outbox(
    receiver: Receiver, settings_env: pytest.MonkeyPatch, tenant: str, outbox_swept_alone: None
) -> None:
    from agent_patterns_dev.gateway import LocalWebhookWorker

    settings_env.setenv("WEBHOOK_OUTBOX_SWEEP_AFTER_SECONDS", "1")
    reset_settings()
    set_local_consumer(None, queue="webhook")  # no worker yet: the delivery has nowhere to go
    run_id = await events.create_run(tenant, "crawl", {"url": "https://example.com/", "webhook_url": receiver.url})
    await events.transition(tenant, run_id, "complete", SUMMARY, result=SUMMARY)
    ((_, _, _, error),) = await outbox(tenant)
    assert error is not None and "WEBHOOK_QUEUE_URL is not set" in error
    worker = LocalWebhookWorker(sweep_every_s=0.2).start()
    try:
        deadline = time.monotonic() + 15
        while not receiver.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(receiver.requests) == 1
        assert json.loads(receiver.requests[0].body)["data"]["run_id"] == run_id
        assert await outbox(tenant) == []
    finally:
        assert worker.stop() == 0
    assert len(receiver.requests) == 1
