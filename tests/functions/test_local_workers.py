"""The dev server's in-process crawl worker survives a job that fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from agent_patterns.config import reset_settings
from agent_patterns.runs import events
from agent_patterns.runs.records import get_run
from agent_patterns_dev.gateway import LocalCrawlWorker


@pytest.fixture
def worker(settings_env: pytest.MonkeyPatch) -> Iterator[LocalCrawlWorker]:
    settings_env.setenv("RUN_QUEUED_LEASE_SECONDS", "1")
    reset_settings()
    started = LocalCrawlWorker(invocation_timeout_s=60).start()
    try:
        yield started
    finally:
        started.stop(grace_s=10)


async def test_a_failing_job_does_not_stop_the_local_crawl_worker(worker: LocalCrawlWorker) -> None:
    # Every record of the batch fails, so Powertools raises out of the handler; the worker used to
    # end its thread there, and every later job (crawls, reaps) waited forever.
    worker.submit({"kind": "crawl", "tenant_id": "acme"})  # no run id: the job cannot run
    run_id = await events.create_run("acme", "crawl", {"url": "https://example.com/"})
    await asyncio.sleep(1.2)  # its queued lease (1 s) runs out: the next reap tick ends it
    worker.submit({"kind": "reap"})
    deadline = time.monotonic() + 30
    record = await get_run("acme", run_id)
    while time.monotonic() < deadline and (record is None or record.status != "error"):
        await asyncio.sleep(0.1)
        record = await get_run("acme", run_id)
    assert worker.thread.is_alive()
    assert record is not None and record.status == "error", record
