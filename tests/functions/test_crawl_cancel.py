"""Cancelling crawls (`POST /v1/crawls/{run_id}/cancel`), and abandoned runs seen through the
crawl API: the reaper's queue message and the lazy reap of `GET /v1/crawls/{run_id}`."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from agent_patterns.backends import get_redis
from agent_patterns.config import reset_settings
from agent_patterns.crawl.jobs import CANCELLED
from agent_patterns.runs import checkpoint_key, events, lease_deadline
from agent_patterns.runs.records import get_run
from agent_patterns_dev.gateway import LocalLambdaContext, load_function, sqs_event
from tests.conftest import LiveServer, bearer, function_client
from tests.crawl_site import build_site, counting_site

SLOW_PAGE_S = 6.0


class Site:
    def __init__(self, base: str, hits: Counter[str], host: str) -> None:
        self.base, self.hits, self.host = base, hits, host


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    other_app, _ = counting_site()
    with LiveServer(other_app) as other:
        app, hits = build_site(other_origin=other.url, private_origin=other.url, slow_seconds=SLOW_PAGE_S)
        with LiveServer(app) as live:
            yield Site(live.url, hits, f"127.0.0.1:{live.port}")


@pytest.fixture
async def api(sent: list[dict[str, Any]], settings_env: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    """The crawl API, with leases of 1 s (renewed every 1/3 s) and 1 s to pick up a queued run."""
    settings_env.setenv("RUN_LEASE_SECONDS", "1")
    settings_env.setenv("RUN_QUEUED_LEASE_SECONDS", "1")
    reset_settings()
    async with function_client("crawl") as client:
        yield client


async def status(run_id: str, tenant: str = "acme") -> str | None:
    record = await get_run(tenant, run_id)
    return None if record is None else record.status


def run_step(message: dict[str, Any], timeout_s: float = 900.0) -> dict[str, Any]:
    """One crawl step in the worker, as its SQS handler runs it (idempotency record included),
    in an invocation of `timeout_s`; returns the step's outcome."""
    worker: Any = load_function("crawl", "crawl_worker")
    context = LocalLambdaContext("crawl-worker", timeout_s)
    worker._context = context
    worker.idempotency.register_lambda_context(context)
    result: dict[str, Any] = worker.run_job(
        job={"key": f"crawl:{message['run_id']}:{message['step']}", "message": message}
    )
    return result


def browser_processes(folder: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if str(folder) in " ".join(proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
    return found


async def start(api: httpx.AsyncClient, url: str, tenant: str = "acme", max_pages: int = 1) -> str:
    response = await api.post("/v1/crawls", json={"url": url, "max_pages": max_pages}, headers=bearer(tenant))
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


async def test_cancelling_a_running_crawl_stops_its_worker_and_nothing_is_stored(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # Chromium's profile, to find its processes
    run_id = await start(api, site.base + "/slow")
    step = asyncio.create_task(asyncio.to_thread(run_step, sent.pop()))
    deadline = time.monotonic() + 30
    while site.hits["/slow"] == 0:  # the browser is on the slow page (it answers after 6 s)
        assert time.monotonic() < deadline and not step.done(), "the crawl never reached the slow page"
        await asyncio.sleep(0.05)
    assert browser_processes(tmp_path)
    assert await status(run_id) == "running"

    cancelled_at = time.monotonic()
    response = await api.post(f"/v1/crawls/{run_id}/cancel", headers=bearer())
    assert response.status_code == 200, response.text
    assert response.json() == {"run_id": run_id, "status": "error", "reason": "cancelled"}
    outcome = await asyncio.wait_for(step, 10)
    stopped_in = time.monotonic() - cancelled_at
    assert outcome == {"run_id": run_id, "step": 0, "outcome": "cancelled"}
    assert stopped_in < 4 < SLOW_PAGE_S  # the next renewal (1/3 s) noticed; not the page finishing
    assert browser_processes(tmp_path) == [] and not list(tmp_path.glob("pw-*"))  # Chromium closed

    report = (await api.get(f"/v1/crawls/{run_id}", headers=bearer())).json()
    assert report["status"] == "error" and report["error_message"] == CANCELLED
    assert report["result"] is None and report["pages"] == []
    types = [e.type for e in await events.replay(run_id)]
    assert types[0] == "queued" and types[-1] == "error" and set(types[1:-1]) <= {"running"}
    assert (await events.replay(run_id))[-1].payload == {"message": CANCELLED, "reason": "cancelled"}
    assert await lease_deadline("acme", run_id) is None
    assert not await get_redis().exists(checkpoint_key(run_id))

    again = await api.post(f"/v1/crawls/{run_id}/cancel", headers=bearer())  # idempotent
    assert again.status_code == 200 and again.json() == response.json()
    assert [e.type for e in await events.replay(run_id)] == types  # and no second event


async def test_a_run_cancelled_while_queued_is_never_crawled(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site
) -> None:
    run_id = await start(api, site.base + "/about")
    assert (await api.post(f"/v1/crawls/{run_id}/cancel", headers=bearer())).status_code == 200
    hits = site.hits.total()
    outcome = await asyncio.to_thread(run_step, sent.pop())
    assert outcome == {"run_id": run_id, "step": 0, "outcome": "already error"}
    assert site.hits.total() == hits
    assert [e.type for e in await events.replay(run_id)] == ["queued", "error"]


async def test_cancelling_an_ended_or_foreign_run_is_refused(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site
) -> None:
    done = await events.create_run("acme", "crawl", {"url": site.base + "/", "max_pages": 1})
    await events.transition("acme", done, "running", {})
    await events.transition("acme", done, "complete", {"pages_crawled": 1}, result={"pages_crawled": 1})
    response = await api.post(f"/v1/crawls/{done}/cancel", headers=bearer())
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("conflict", f"run {done} has already ended: complete")

    failed = await events.create_run("acme", "crawl", {"url": site.base + "/", "max_pages": 1})
    await events.transition("acme", failed, "error", {"message": "login failed"}, error_message="login failed")
    response = await api.post(f"/v1/crawls/{failed}/cancel", headers=bearer())
    assert response.status_code == 409 and "error (login failed)" in response.json()["error"]["message"]

    queued = await start(api, site.base + "/")
    assert (await api.post(f"/v1/crawls/{queued}/cancel", headers=bearer("globex"))).status_code == 404
    assert (await api.post(f"/v1/crawls/{uuid.uuid4()}/cancel", headers=bearer())).status_code == 404
    other_kind = await events.create_run("acme", "llm")
    assert (await api.post(f"/v1/crawls/{other_kind}/cancel", headers=bearer())).status_code == 404
    garbage = await api.post("/v1/crawls/not-a-uuid/cancel", headers=bearer())
    assert garbage.status_code == 422 and garbage.json()["error"]["code"] == "invalid_input"
    assert (await api.post(f"/v1/crawls/{queued}/cancel")).status_code == 401
    assert await status(queued) == "queued" and await status(other_kind) == "queued"


async def test_reading_an_abandoned_run_reaps_it(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site
) -> None:
    run_id = await start(api, site.base + "/")  # its job message is never delivered
    await asyncio.sleep(1.2)
    assert await status(run_id) == "queued"  # no sweep ran
    report = (await api.get(f"/v1/crawls/{run_id}", headers=bearer())).json()
    assert report["status"] == "error"
    assert report["error_message"] == "abandoned: no worker started the run within 1 s"
    last = (await events.replay(run_id))[-1]
    assert last.type == "error" and last.payload["reason"] == "abandoned"


async def test_every_reap_message_sweeps(api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site) -> None:
    worker = load_function("crawl", "crawl_worker")
    for _ in range(2):  # each tick is a new SQS message: none is deduplicated away
        run_id = await start(api, site.base + "/")
        await asyncio.sleep(1.2)
        event = sqs_event({"kind": "reap"})
        response = await asyncio.to_thread(worker.handler, event, LocalLambdaContext("crawl-worker"))
        assert response == {"batchItemFailures": []}
        record = await get_run("acme", run_id)
        assert record is not None and record.status == "error" and record.error_message is not None
        assert record.error_message.startswith("abandoned")


async def test_between_steps_a_continued_run_holds_the_queued_lease(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site, settings_env: pytest.MonkeyPatch
) -> None:
    settings_env.setenv("CRAWL_INVOCATION_MARGIN_SECONDS", "5")
    settings_env.setenv("RUN_QUEUED_LEASE_SECONDS", "30")
    reset_settings()
    run_id = await start(api, site.base + "/about", max_pages=2)
    outcomes = []
    while sent:  # each invocation has only its margin left: one page, then a continuation
        outcomes.append((await asyncio.to_thread(run_step, sent.pop(0), 5.0))["outcome"])
        if outcomes[-1] == "continued":
            deadline = await lease_deadline("acme", run_id)
            assert deadline is not None and 25 < deadline - time.time() <= 30  # not the 1 s of a running step
        assert len(outcomes) < 10
    assert outcomes == ["continued", "complete"]
    assert await lease_deadline("acme", run_id) is None and not await get_redis().exists(checkpoint_key(run_id))
    report = (await api.get(f"/v1/crawls/{run_id}", headers=bearer())).json()
    assert report["status"] == "complete" and len(report["pages"]) == 2
