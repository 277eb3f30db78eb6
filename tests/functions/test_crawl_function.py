"""The crawl API and the crawl worker: triggers, idempotency, continuations, events, storage."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from moto import mock_aws

from agent_patterns.backends.sqs import reset_sqs
from agent_patterns.config import reset_settings
from agent_patterns.runs import events
from agent_patterns_dev.gateway import LocalLambdaContext, load_function, sqs_event
from tests.conftest import LiveServer, bearer, function_client
from tests.crawl_site import build_site, counting_site


class Site:
    def __init__(self, base: str, hits: Counter[str], host: str) -> None:
        self.base, self.hits, self.host = base, hits, host


@contextmanager
def serve_site(**options: Any) -> Iterator[Site]:
    """The generated site, and the second origin its outside links point at, served."""
    other_app, _ = counting_site()
    with LiveServer(other_app) as other:
        app, hits = build_site(other_origin=other.url, private_origin=other.url, **options)
        with LiveServer(app) as live:
            yield Site(live.url, hits, f"127.0.0.1:{live.port}")


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with serve_site(slow_seconds=0.2) as served:
        yield served


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with function_client("crawl") as client:
        yield client


async def run_worker(message: dict[str, Any], *, timeout_s: float = 900.0) -> dict[str, Any]:
    worker = load_function("crawl", "crawl_worker")
    event = message if "Records" in message else sqs_event(message)
    return await asyncio.to_thread(worker.handler, event, LocalLambdaContext("crawl-worker", timeout_s))


async def test_post_returns_202_with_stream_details_and_enqueues_the_run(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site
) -> None:
    response = await api.post("/v1/crawls", json={"url": site.base + "/", "max_pages": 5}, headers=bearer())
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"run_id", "status", "events_url", "stream_token"} and body["status"] == "queued"
    assert body["events_url"] == f"http://api.test/v1/runs/{body['run_id']}/events"
    assert sent == [{"kind": "crawl", "run_id": body["run_id"], "tenant_id": "acme", "step": 0}]
    assert [e.type for e in await events.replay(body["run_id"])] == ["queued"]
    status = await api.get(f"/v1/crawls/{body['run_id']}", headers=bearer())
    assert status.status_code == 200 and status.json()["status"] == "queued"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"url": "ftp://example.com/"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://127.0.0.1:9/"}, "non-public"),
        ({"url": "http://169.254.169.254/latest/"}, "non-public"),
        ({"url": "http://localhost/"}, "non-public"),
        ({"url": "https://example.com/", "max_pages": 0}, "max_pages"),
        ({"url": "https://example.com/", "max_pages": 101}, "max_pages"),
        (
            {"url": "http://127.0.0.1:9/", "auth": {"login_url": "http://127.0.0.1:9/login", "username": "a"}},
            "password",
        ),
        ({"url": "http://unresolvable.invalid/"}, "cannot resolve"),
    ],
)
async def test_invalid_requests_are_422_with_the_reason_and_nothing_is_written(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], body: dict[str, Any], fragment: str
) -> None:
    tenant_id = f"bad{uuid.uuid4().hex[:8]}"
    response = await api.post("/v1/crawls", json=body, headers=bearer(tenant_id))
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]["message"]
    assert sent == []
    assert await run_ids(tenant_id) == []  # no run recorded


async def test_unauthenticated_and_foreign_runs(api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site) -> None:
    assert (await api.post("/v1/crawls", json={"url": site.base + "/"})).status_code == 401
    run_id = (await api.post("/v1/crawls", json={"url": site.base + "/"}, headers=bearer())).json()["run_id"]
    assert (await api.get(f"/v1/crawls/{run_id}", headers=bearer("globex"))).status_code == 404
    assert (await api.get(f"/v1/crawls/{uuid.uuid4()}", headers=bearer())).status_code == 404
    assert (await api.get("/v1/crawls/not-a-uuid", headers=bearer())).status_code == 422


async def test_on_aws_the_run_is_sent_to_sqs(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], settings_env: pytest.MonkeyPatch, site: Site
) -> None:
    with mock_aws():
        import boto3

        queue_url = boto3.client("sqs").create_queue(QueueName="crawl-jobs")["QueueUrl"]
        settings_env.setenv("CRAWL_QUEUE_URL", queue_url)
        reset_settings()
        reset_sqs()
        response = await api.post("/v1/crawls", json={"url": site.base + "/"}, headers=bearer())
        assert response.status_code == 202, response.text
        assert sent == []  # went to SQS, not to the local worker
        messages = boto3.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
        assert [json.loads(m["Body"]) for m in messages] == [
            {"kind": "crawl", "run_id": response.json()["run_id"], "tenant_id": "acme", "step": 0}
        ]
    reset_sqs()


async def test_a_password_is_sealed_at_rest_and_never_shown(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site
) -> None:
    auth = {"login_url": site.base + "/login", "username": "ada", "password": "correct horse"}
    run_id = (
        await api.post("/v1/crawls", json={"url": site.base + "/account", "auth": auth}, headers=bearer())
    ).json()["run_id"]
    from agent_patterns.runs.records import get_run

    record = await get_run("acme", run_id)
    assert record is not None and "correct horse" not in json.dumps(record.request)
    shown = (await api.get(f"/v1/crawls/{run_id}", headers=bearer())).json()
    assert "correct horse" not in json.dumps(shown) and "password_sealed" not in json.dumps(shown)


async def test_the_worker_crawls_stores_pages_and_publishes_events_in_order(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site
) -> None:
    run_id = (await api.post("/v1/crawls", json={"url": site.base + "/", "max_pages": 6}, headers=bearer())).json()[
        "run_id"
    ]
    response = await run_worker(sent.pop())
    assert response == {"batchItemFailures": []}
    types = [e.type for e in await events.replay(run_id)]
    assert types[0] == "queued" and types[-1] == "complete" and set(types[1:-1]) == {"running"}
    progress = [e.payload for e in await events.replay(run_id) if e.type == "running" and e.payload.get("url")]
    assert [p["pages_crawled"] for p in progress] == sorted(p["pages_crawled"] for p in progress)
    assert all(p["max_pages"] == 6 for p in progress)
    complete = (await events.replay(run_id))[-1].payload
    report = (await api.get(f"/v1/crawls/{run_id}", headers=bearer())).json()
    assert report["status"] == "complete"
    assert len(report["pages"]) == complete["pages_crawled"] == report["result"]["pages_crawled"] <= 6
    assert report["pages"][0]["url"] == site.base + "/" and report["pages"][0]["depth"] == 0
    assert any(s["reason"] == "cross-origin" for s in report["result"]["skipped"])


async def test_redelivery_never_starts_a_second_crawl(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site
) -> None:
    run_id = (
        await api.post("/v1/crawls", json={"url": site.base + "/about", "max_pages": 2}, headers=bearer())
    ).json()["run_id"]
    event = sqs_event(sent.pop())
    await run_worker(event)
    hits_after_first = site.hits.total()
    assert (await run_worker(event)) == {"batchItemFailures": []}  # the same delivery again
    event["Records"][0]["messageId"] = str(uuid.uuid4())  # and as a new delivery of the same job
    assert (await run_worker(event)) == {"batchItemFailures": []}
    assert site.hits.total() == hits_after_first
    assert [e.type for e in await events.replay(run_id)].count("complete") == 1


async def test_poison_messages_are_reported_per_record(sent: list[dict[str, Any]], site: Site) -> None:
    good = sqs_event({"kind": "schedule", "tenant_id": "acme", "url": site.base + "/about", "max_pages": 1})
    bad_json = sqs_event({})
    bad_json["Records"][0]["body"] = "{not json"
    unknown_run = sqs_event({"kind": "crawl", "tenant_id": "acme", "run_id": str(uuid.uuid4()), "step": 0})
    bad_tenant = sqs_event({"kind": "crawl", "tenant_id": "Robert'); DROP", "run_id": str(uuid.uuid4())})
    batch = {"Records": [r for e in (good, bad_json, unknown_run, bad_tenant) for r in e["Records"]]}
    response = await run_worker(batch)
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    ids = [r["messageId"] for r in batch["Records"]]
    assert failed == set(ids[1:])


async def run_ids(tenant_id: str) -> list[str]:
    """The tenant's runs, oldest first, as stored ([] before its schema exists)."""
    from psycopg import sql

    from agent_patterns.backends import connection

    async with connection() as db:
        cur = await db.execute("SELECT to_regclass(%s) IS NOT NULL", (f"tenant_{tenant_id}.runs",))
        if not (await cur.fetchone() or (False,))[0]:
            return []
        cur = await db.execute(
            sql.SQL("SELECT run_id FROM {}.runs ORDER BY created_at, run_id").format(
                sql.Identifier(f"tenant_{tenant_id}")
            )
        )
        return [str(row[0]) for row in await cur.fetchall()]


async def test_a_scheduled_crawl_creates_and_runs_one_run_per_tick(sent: list[dict[str, Any]], site: Site) -> None:
    from agent_patterns.crawl.jobs import crawl_report

    tenant_id = f"sched{uuid.uuid4().hex[:8]}"
    message = {"kind": "schedule", "tenant_id": tenant_id, "url": site.base + "/products", "max_pages": 3}
    event = sqs_event(message)
    assert await run_worker(event) == {"batchItemFailures": []}
    (run_id,) = await run_ids(tenant_id)
    report = await crawl_report(tenant_id, run_id)
    assert report["status"] == "complete" and report["request"]["trigger"] == "schedule"
    assert len(report["pages"]) == report["result"]["pages_crawled"] == 3
    assert [e.type for e in await events.replay(run_id)][-1] == "complete"
    hits = site.hits.total()
    assert await run_worker(event) == {"batchItemFailures": []}  # the same tick delivered again
    assert await run_ids(tenant_id) == [run_id] and site.hits.total() == hits  # no second run, no crawl
    assert await run_worker(sqs_event(message)) == {"batchItemFailures": []}  # the next tick
    runs = await run_ids(tenant_id)
    assert len(runs) == 2 and runs[0] == run_id


async def test_a_run_continues_across_invocations_with_the_same_result(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site, settings_env: pytest.MonkeyPatch
) -> None:
    body = {"url": site.base + "/", "max_pages": 6}
    whole = (await api.post("/v1/crawls", json=body, headers=bearer())).json()["run_id"]
    await run_worker(sent.pop())
    settings_env.setenv("CRAWL_INVOCATION_MARGIN_SECONDS", "5")
    reset_settings()
    split = (await api.post("/v1/crawls", json=body, headers=bearer())).json()["run_id"]
    invocations = 0
    while sent:
        invocations += 1
        # Each invocation has only its margin left (5 s): it crawls the one page every
        # invocation is guaranteed, saves its state and re-enqueues the rest.
        assert (await run_worker(sent.pop(0), timeout_s=5.0)) == {"batchItemFailures": []}
        assert invocations < 30
    assert invocations >= 4
    a = (await api.get(f"/v1/crawls/{whole}", headers=bearer())).json()
    b = (await api.get(f"/v1/crawls/{split}", headers=bearer())).json()
    assert b["status"] == "complete" and b["result"]["invocations"] == invocations
    assert [p["url"] for p in b["pages"]] == [p["url"] for p in a["pages"]]
    types = [e.type for e in await events.replay(split)]
    assert types.count("complete") == 1 and types[-1] == "complete"


async def test_a_failed_login_ends_the_run_with_an_error_event(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site
) -> None:
    auth = {"login_url": site.base + "/login", "username": "ada", "password": "wrong", "success_selector": "#welcome"}
    run_id = (
        await api.post("/v1/crawls", json={"url": site.base + "/account", "auth": auth}, headers=bearer())
    ).json()["run_id"]
    await run_worker(sent.pop())
    last = (await events.replay(run_id))[-1]
    assert last.type == "error" and last.payload["message"].startswith("login failed")
    report = (await api.get(f"/v1/crawls/{run_id}", headers=bearer())).json()
    assert report["status"] == "error" and report["error_message"].startswith("login failed")
