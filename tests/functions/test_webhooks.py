"""Webhooks of run endings: Standard Webhooks signatures a receiver can verify, retries with the
same id and body, at most one 2xx per event and endpoint, dead letters, and the crawler's
public-addresses-only rule at the door and again at delivery."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from moto import mock_aws
from standardwebhooks import Webhook

from agent_patterns.backends.sqs import reset_sqs, set_local_consumer
from agent_patterns.config import reset_settings
from agent_patterns.runs import events
from agent_patterns_dev.gateway import LocalLambdaContext, load_function, sqs_event
from tests.conftest import SHARED, bearer, function_client, tenant_rows
from tests.functions.conftest import invoke_as_lambda
from tests.readme_webhooks import readme_verify


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: answers the statuses of `script` in turn, then 200."""

    port: int = 0
    script: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
            receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status = receiver.script.pop(0) if receiver.script else 200
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield receiver
    httpd.shutdown()
    httpd.server_close()


@dataclass
class Queues:
    """What the functions sent, captured in-process (no WEBHOOK_QUEUE_URL)."""

    crawl: list[dict[str, Any]] = field(default_factory=list)
    webhook: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def receiver(receiver_server: Receiver, settings_env: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """The receiver, emptied, admitted by the crawler's allow-list; retries without delay."""
    receiver_server.script.clear()
    receiver_server.requests.clear()
    settings_env.setenv("CRAWL_ALLOWED_PRIVATE_HOSTS_UNSAFE", receiver_server.host)
    settings_env.setenv("WEBHOOK_RETRY_BASE_SECONDS", "0")
    settings_env.setenv("WEBHOOK_MAX_ATTEMPTS", "5")
    settings_env.setenv("WEBHOOK_TIMEOUT_SECONDS", "5")
    for name in ("CRAWL_QUEUE_URL", "WEBHOOK_QUEUE_URL", "WEBHOOK_DEAD_LETTER_QUEUE_URL"):
        settings_env.delenv(name, raising=False)
    reset_settings()
    yield receiver_server


@pytest.fixture
def queues(receiver: Receiver) -> Iterator[Queues]:
    captured = Queues()
    set_local_consumer(captured.crawl.append)
    set_local_consumer(captured.webhook.append, queue="webhook")
    set_local_consumer(captured.dead.append, queue="webhook_dead_letter")
    yield captured
    for queue in ("crawl", "webhook", "webhook_dead_letter"):
        set_local_consumer(None, queue=queue)


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with function_client("crawl") as client:
        yield client


@pytest.fixture
def tenant() -> str:
    """A tenant of its own: default endpoints must not reach other tests' runs."""
    return f"wh{uuid.uuid4().hex[:10]}"


async def run_handler(message_or_event: dict[str, Any]) -> dict[str, Any]:
    handler = load_function("webhooks", "webhook_handler")
    event = message_or_event if "Records" in message_or_event else sqs_event(message_or_event)
    response: dict[str, Any] = await asyncio.to_thread(handler.handler, event, LocalLambdaContext("webhooks", 60))
    return response


async def pump(queues: Queues, limit: int = 20) -> list[dict[str, Any]]:
    """Run the webhook function on every queued message (retries included); returns them."""
    handled: list[dict[str, Any]] = []
    while queues.webhook:
        assert len(handled) < limit, "deliveries never stop"
        message = queues.webhook.pop(0)
        assert await run_handler(message) == {"batchItemFailures": []}
        handled.append(message)
    return handled


async def start_crawl(api: httpx.AsyncClient, receiver: Receiver, tenant: str, **extra: Any) -> str:
    body = {"url": receiver.url + "/site", "max_pages": 1, **extra}
    response = await api.post("/v1/crawls", json=body, headers=bearer(tenant))
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


async def secret_of(api: httpx.AsyncClient, tenant: str) -> str:
    response = await api.get("/v1/webhooks/secret", headers=bearer(tenant))
    assert response.status_code == 200, response.text
    secret = response.json()["secret"]
    assert isinstance(secret, str) and secret.startswith("whsec_")
    return secret


def verified(secret: str, request: Received) -> Any:
    """What a receiver does: check the signature over the raw body (the spec's own package),
    then parse it."""
    return Webhook(secret).verify(request.body, request.headers)


SUMMARY = {"pages_crawled": 3, "forms_found": 1, "links_found": 7, "blocked": 0, "skipped": 2}


async def test_a_completed_run_sends_one_signed_post_the_tenant_can_verify(
    api: httpx.AsyncClient, receiver: Receiver, queues: Queues, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = await start_crawl(api, receiver, tenant, webhook_url=receiver.url + "/hook?token=abc")
    assert await events.transition(tenant, run_id, "complete", SUMMARY, result=SUMMARY) is not None
    event_id = f"msg_{uuid.UUID(run_id).hex}_complete"
    assert queues.webhook == [
        {
            "kind": "webhook",
            "event_id": event_id,
            "tenant_id": tenant,
            "url": receiver.url + "/hook?token=abc",
            "attempt": 1,
        }
    ]
    message = queues.webhook[0]
    await pump(queues)
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.path == "/hook?token=abc"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == event_id
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert request.headers["webhook-signature"].startswith("v1,") and " " not in request.headers["webhook-signature"]
    secret = await secret_of(api, tenant)
    payload = verified(secret, request)
    assert payload["type"] == "run.complete" and payload["timestamp"].endswith("Z")
    assert payload["data"] == {"run_id": run_id, "kind": "crawl", "status": "complete", "result": SUMMARY}
    with pytest.raises(Exception, match="signature"):  # another tenant's secret does not verify it
        verified(await secret_of(api, f"{tenant}x"), request)
    verify = readme_verify()
    assert verify(secret, request.headers, request.body.encode())
    assert not verify(secret, request.headers, request.body.replace("complete", "error").encode())
    assert not verify(await secret_of(api, f"{tenant}x"), request.headers, request.body.encode())

    # SQS delivers the same message again: the receiver already answered 2xx, nothing is sent.
    assert await run_handler(message) == {"batchItemFailures": []}
    assert await run_handler({**message, "attempt": 2}) == {"batchItemFailures": []}
    assert len(receiver.requests) == 1 and queues.webhook == []
    # A run ends once: a later transition changes nothing and queues nothing.
    assert await events.transition(tenant, run_id, "error", {"message": "late"}, error_message="late") is None
    assert queues.webhook == []

    assert "webhook delivery" in [r.getMessage() for r in caplog.records]  # each attempt is logged ...
    logged = "\n".join(repr(vars(r)) for r in caplog.records)  # message and every extra field
    for text in (secret.removeprefix("whsec_"), request.headers["webhook-signature"].split(",", 1)[1]):
        assert text not in logged  # ... without its secret or signature
    assert "token=abc" not in logged  # endpoints are logged by origin only

    # At rest the secret is sealed.
    from psycopg import sql

    from agent_patterns.backends import connection

    async with connection() as db:
        cur = await db.execute(
            sql.SQL("SELECT secret_sealed FROM {}.webhook_config").format(sql.Identifier(f"tenant_{tenant}"))
        )
        row = await cur.fetchone()
    assert row is not None and secret.removeprefix("whsec_") not in row[0] and "whsec_" not in row[0]


async def test_a_failing_receiver_gets_retries_with_the_same_id_and_body_until_a_2xx(
    api: httpx.AsyncClient, receiver: Receiver, queues: Queues, tenant: str
) -> None:
    receiver.script[:] = [500, 500, 200]
    run_id = await start_crawl(api, receiver, tenant, webhook_url=receiver.url + "/hook")
    await events.transition(tenant, run_id, "complete", SUMMARY, result=SUMMARY)
    handled = await pump(queues)
    assert [m["attempt"] for m in handled] == [1, 2, 3]
    assert len(receiver.requests) == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    secret = await secret_of(api, tenant)
    assert all(verified(secret, r)["data"]["run_id"] == run_id for r in receiver.requests)
    # After the 2xx nothing more: neither a stray copy of an earlier attempt nor a redelivery.
    for message in handled:
        assert await run_handler(message) == {"batchItemFailures": []}
    assert len(receiver.requests) == 3 and queues.webhook == [] and queues.dead == []


def lambda_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The SQS event Lambda's event source mapping builds from received messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


async def test_after_its_last_attempt_a_delivery_is_dead_lettered(
    receiver: Receiver, settings_env: pytest.MonkeyPatch, tenant: str
) -> None:
    receiver.script[:] = [503] * 10
    with mock_aws():
        import boto3

        sqs = boto3.client("sqs")
        dlq_url = sqs.create_queue(QueueName="webhooks-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
        queue_url = sqs.create_queue(QueueName="webhooks", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        settings_env.setenv("WEBHOOK_QUEUE_URL", queue_url)
        settings_env.setenv("WEBHOOK_DEAD_LETTER_QUEUE_URL", dlq_url)
        settings_env.setenv("WEBHOOK_MAX_ATTEMPTS", "3")
        reset_settings()
        reset_sqs()
        try:
            run_id = await events.create_run(
                tenant, "crawl", {"url": "https://example.com/", "webhook_url": receiver.url}
            )
            await events.transition(tenant, run_id, "complete", SUMMARY, result=SUMMARY)
            for _ in range(10):  # Lambda's poller: receive, invoke, delete what succeeded
                received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
                if not received:
                    break
                response = await run_handler(lambda_event(received, queue_arn))
                failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
                assert failed == set()
                for m in received:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            assert len(receiver.requests) == 3
            letters = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10).get("Messages", [])
            assert len(letters) == 1
            letter = json.loads(letters[0]["Body"])
            assert letter["event_id"] == f"msg_{uuid.UUID(run_id).hex}_complete" and letter["attempt"] == 3
            assert letter["url"] == receiver.url and letter["tenant_id"] == tenant
            assert letter["error"] == "3 attempts failed, the last: HTTP 503"
            assert "Messages" not in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        finally:
            reset_sqs()


@pytest.mark.parametrize(
    "target",
    ["http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/", "http://localhost:{port}/hook"],
)
async def test_a_webhook_url_that_is_not_public_is_refused_at_the_door(
    api: httpx.AsyncClient, receiver: Receiver, queues: Queues, tenant: str, target: str
) -> None:
    url = target.format(port=receiver.port)  # localhost: the allow-list names 127.0.0.1:port only
    body = {"url": receiver.url + "/site", "webhook_url": url}
    response = await api.post("/v1/crawls", json=body, headers=bearer(tenant))
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert message.startswith("webhook_url: ") and "non-public address" in message
    assert queues.crawl == [] and queues.webhook == []
    assert await tenant_rows(tenant, "runs") == 0  # no run recorded
    response = await api.put("/v1/webhooks", json={"urls": [receiver.url + "/ok", url]}, headers=bearer(tenant))
    assert response.status_code == 422 and response.json()["error"]["message"].startswith("urls.1: ")
    assert (await api.get("/v1/webhooks", headers=bearer(tenant))).json() == {"urls": []}
    assert receiver.requests == []


async def test_a_target_no_longer_allowed_is_refused_again_at_delivery(
    api: httpx.AsyncClient, receiver: Receiver, queues: Queues, tenant: str, settings_env: pytest.MonkeyPatch
) -> None:
    run_id = await start_crawl(api, receiver, tenant, webhook_url=receiver.url + "/hook")
    await events.transition(tenant, run_id, "complete", SUMMARY, result=SUMMARY)
    settings_env.delenv("CRAWL_ALLOWED_PRIVATE_HOSTS_UNSAFE")  # the allow-list changed meanwhile
    reset_settings()
    assert len(await pump(queues)) == 1  # no retries either
    assert receiver.requests == []
    assert len(queues.dead) == 1
    assert queues.dead[0]["error"].startswith("blocked: 127.0.0.1 resolves to non-public address 127.0.0.1")


async def test_an_ended_run_in_error_sends_run_error(
    api: httpx.AsyncClient, receiver: Receiver, queues: Queues, tenant: str
) -> None:
    run_id = await start_crawl(api, receiver, tenant, webhook_url=receiver.url + "/hook")
    cancelled = await api.post(f"/v1/crawls/{run_id}/cancel", headers=bearer(tenant))
    assert cancelled.status_code == 200, cancelled.text
    assert [m["event_id"] for m in queues.webhook] == [f"msg_{uuid.UUID(run_id).hex}_error"]
    await pump(queues)
    assert len(receiver.requests) == 1
    payload = verified(await secret_of(api, tenant), receiver.requests[0])
    assert payload["type"] == "run.error"
    assert payload["data"] == {
        "run_id": run_id,
        "kind": "crawl",
        "status": "error",
        "error": {"message": "cancelled by the user", "reason": "cancelled"},
    }


async def test_the_tenants_default_endpoints_receive_every_run(
    api: httpx.AsyncClient, receiver: Receiver, queues: Queues, tenant: str
) -> None:
    urls = [receiver.url + "/a", receiver.url + "/b"]
    response = await api.put("/v1/webhooks", json={"urls": urls}, headers=bearer(tenant))
    assert response.status_code == 200 and response.json() == {"urls": urls}
    assert (await api.get("/v1/webhooks", headers=bearer(tenant))).json() == {"urls": urls}
    assert (await api.get("/v1/webhooks", headers=bearer(f"{tenant}x"))).json() == {"urls": []}
    run_id = await start_crawl(api, receiver, tenant, webhook_url=urls[0])  # named twice: sent once
    await events.transition(tenant, run_id, "error", {"message": "boom"}, error_message="boom")
    await pump(queues)
    assert sorted(r.path for r in receiver.requests) == ["/a", "/b"]
    assert len({(r.headers["webhook-id"], r.body) for r in receiver.requests}) == 1
    assert (await api.put("/v1/webhooks", json={"urls": []}, headers=bearer(tenant))).json() == {"urls": []}
    other = await start_crawl(api, receiver, tenant)
    await events.transition(tenant, other, "complete", SUMMARY, result=SUMMARY)
    assert queues.webhook == []  # no endpoint: nothing queued
    too_many = {"urls": [f"{receiver.url}/{i}" for i in range(11)]}
    assert (await api.put("/v1/webhooks", json=too_many, headers=bearer(tenant))).status_code == 422
    assert (await api.get("/v1/webhooks")).status_code == 401


async def test_a_rotated_secret_signs_next_to_the_new_one_for_a_day(
    api: httpx.AsyncClient, receiver: Receiver, queues: Queues, tenant: str
) -> None:
    old = await secret_of(api, tenant)
    assert await secret_of(api, tenant) == old  # created once, then read
    rotated = await api.post("/v1/webhooks/secret/rotate", headers=bearer(tenant))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_") and await secret_of(api, tenant) == new
    assert rotated.json()["previous_secret_valid_until"] is not None
    run_id = await start_crawl(api, receiver, tenant, webhook_url=receiver.url + "/hook")
    await events.transition(tenant, run_id, "complete", SUMMARY, result=SUMMARY)
    await pump(queues)
    request = receiver.requests[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verified(new, request)["data"]["run_id"] == run_id  # receivers on the new secret
    assert verified(old, request)["data"]["run_id"] == run_id  # and those not switched yet
    assert (await api.post("/v1/webhooks/secret/rotate")).status_code == 401


def test_the_local_gateway_routes_webhooks_to_the_crawl_function() -> None:
    from agent_patterns_dev.gateway import LocalGateway

    apps: dict[str, Any] = {name: object() for name in ("llm", "search", "crawl", "streaming")}
    gateway = LocalGateway(apps)
    for path in ("/v1/webhooks", "/v1/webhooks/secret", "/v1/webhooks/secret/rotate"):
        target = gateway._target(path)
        assert target is not None and target[0] is apps["crawl"]


async def test_the_sample_events_are_what_the_functions_take(settings_env: pytest.MonkeyPatch) -> None:
    """shared/events/webhooks_secret.json through Mangum (tenant from the authorizer's claims),
    and webhook_sqs_delivery.json holds a valid delivery message."""
    from agent_patterns.webhooks.delivery import DeliveryMessage

    sample = json.loads((SHARED / "events" / "webhook_sqs_delivery.json").read_text())
    assert DeliveryMessage.model_validate_json(sample["Records"][0]["body"]).attempt == 1
    settings_env.setenv("AUTH_MODE", "apigateway")
    reset_settings()
    event = json.loads((SHARED / "events" / "webhooks_secret.json").read_text())
    response = await invoke_as_lambda("crawl", event, "crawl-api")
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["secret"].startswith("whsec_")


async def test_the_dev_servers_worker_delivers_in_process_with_delayed_retries(
    receiver: Receiver, settings_env: pytest.MonkeyPatch, tenant: str
) -> None:
    from agent_patterns_dev.gateway import LocalWebhookWorker

    settings_env.setenv("WEBHOOK_RETRY_BASE_SECONDS", "0.5")  # the retry waits 1 s, on a timer thread
    reset_settings()
    receiver.script[:] = [500]
    worker = LocalWebhookWorker().start()
    try:
        run_id = await events.create_run(tenant, "crawl", {"url": "https://example.com/", "webhook_url": receiver.url})
        started = time.monotonic()
        await events.transition(tenant, run_id, "error", {"message": "boom"}, error_message="boom")
        while len(receiver.requests) < 2 and time.monotonic() - started < 15:
            await asyncio.sleep(0.05)
        assert [json.loads(r.body)["type"] for r in receiver.requests] == ["run.error", "run.error"]
        assert time.monotonic() - started >= 0.9  # the second attempt waited for its delay
    finally:
        assert worker.stop() == 0
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == 2


async def test_a_copy_of_an_attempt_in_hand_elsewhere_waits_and_sends_nothing(
    receiver: Receiver, queues: Queues, tenant: str
) -> None:
    from agent_patterns.backends import get_redis
    from agent_patterns.webhooks.delivery import attempt_key

    run_id = await events.create_run(tenant, "crawl", {"url": "https://example.com/", "webhook_url": receiver.url})
    await events.transition(tenant, run_id, "complete", SUMMARY, result=SUMMARY)
    (message,) = queues.webhook
    await get_redis().set(attempt_key(message["event_id"], message["url"]), "1|started", ex=60)  # another worker
    with pytest.raises(Exception, match="All records failed"):  # SQS brings it back after its visibility timeout
        await run_handler(message)
    assert receiver.requests == []
    await get_redis().delete(attempt_key(message["event_id"], message["url"]))  # that worker died
    assert await run_handler(message) == {"batchItemFailures": []}
    assert len(receiver.requests) == 1
