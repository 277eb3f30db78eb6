"""Run leases and the reaper: a run whose worker died ends as `error` (abandoned), once; a
worker that keeps renewing keeps its run; an ended run stays ended."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid

import pytest

from agent_patterns.config import reset_settings
from agent_patterns.errors import NotFoundError, RunEndedError
from agent_patterns.runs import events, leases
from agent_patterns.runs.records import get_run, update_run
from tests.conftest import ROOT, python_subprocess_env

HOLDER = """
import asyncio, sys
from agent_patterns.runs.leases import Lease

async def main() -> None:
    async with Lease(sys.argv[1], sys.argv[2]) as lease:
        print("lost" if lease.lost else "held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture
def short_leases(settings_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Leases of 1 s, renewed every 1/3 s; a queued run is given 1 s to be picked up."""
    settings_env.setenv("RUN_LEASE_SECONDS", "1")
    settings_env.setenv("RUN_QUEUED_LEASE_SECONDS", "1")
    reset_settings()
    return settings_env


async def reaped_within(run_id: str, seconds: float) -> list[str]:
    """Sweep until `run_id` is reaped (by this sweep or another one); every id this test's sweeps reaped."""
    deadline = time.monotonic() + seconds
    reaped: list[str] = []
    while time.monotonic() < deadline:
        reaped += await leases.reap_expired_runs()
        record = await get_run("acme", run_id)
        if record is not None and record.status == "error":
            return reaped
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} was not reaped within {seconds} s")


async def test_a_run_whose_worker_was_killed_is_reaped_as_abandoned_and_its_stream_ends(
    short_leases: pytest.MonkeyPatch,
) -> None:
    run_id = await events.create_run("acme", "crawl", {"url": "https://example.com/"})
    await events.transition("acme", run_id, "running", {"url": None, "pages_crawled": 0, "max_pages": 5})
    # The worker is another process holding the lease, as a crawl step does; it is killed with
    # SIGKILL, so nothing of it runs afterwards (no cleanup, no last renewal).
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        "acme",
        run_id,
        stdout=asyncio.subprocess.PIPE,
        env=python_subprocess_env(RUN_LEASE_SECONDS="1"),
        cwd=ROOT,
    )
    assert worker.stdout is not None
    try:
        assert (await asyncio.wait_for(worker.stdout.readline(), 30)).strip() == b"held"
        follower = asyncio.create_task(asyncio.wait_for(_follow(run_id), 20))
        # While it renews, several lease periods pass and the run is not reaped.
        for _ in range(8):
            await asyncio.sleep(0.4)
            assert run_id not in await leases.reap_expired_runs()
        record = await get_run("acme", run_id)
        assert record is not None and record.status == "running"
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        killed = time.monotonic()
        reaped = await reaped_within(run_id, 5)
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    assert run_id in reaped
    assert time.monotonic() - killed < 3  # the lease (1 s) ran out, then the next sweep saw it
    record = await get_run("acme", run_id)
    assert record is not None and record.status == "error" and record.result is None
    assert record.error_message == "abandoned: the worker stopped responding (no heartbeat for 1 s)"
    followed = await follower  # a subscriber following the run is released by the error event
    assert [e.type for e in followed] == ["queued", "running", "error"]
    assert followed[-1].payload == {"message": record.error_message, "reason": "abandoned"}
    assert await leases.lease_deadline("acme", run_id) is None


async def _follow(run_id: str) -> list[events.RunEvent]:
    return [event async for event in events.follow(run_id, block_ms=200)]


async def test_a_queued_run_no_worker_picks_up_is_reaped(short_leases: pytest.MonkeyPatch) -> None:
    run_id = await events.create_run("acme", "crawl")
    assert run_id not in await leases.reap_expired_runs()  # not yet: it has 1 s
    await reaped_within(run_id, 5)
    record = await get_run("acme", run_id)
    assert record is not None and record.error_message == "abandoned: no worker started the run within 1 s"


def _reap_in_a_loop_of_its_own() -> list[str]:
    """One reaper with its own event loop and connections (as another process would have)."""

    async def sweep() -> list[str]:
        from agent_patterns.backends.postgres import close_postgres
        from agent_patterns.backends.redis import current_client

        try:
            return await leases.reap_expired_runs()
        finally:
            client = current_client()
            if client is not None:
                await client.aclose()
            await close_postgres()

    return asyncio.run(sweep())


async def test_concurrent_reapers_reap_a_run_once(short_leases: pytest.MonkeyPatch) -> None:
    runs = [await events.create_run("acme", "crawl") for _ in range(5)]
    await asyncio.sleep(1.2)  # every lease has run out
    sweeps, hits = await asyncio.gather(  # 4 sweeps in other threads, and a GET's lazy reap of each run
        asyncio.gather(*(asyncio.to_thread(_reap_in_a_loop_of_its_own) for _ in range(4))),
        asyncio.gather(*(leases.reap_if_expired("acme", run_id) for run_id in runs)),
    )
    reaped = [run_id for sweep in sweeps for run_id in sweep]
    reaped += [run_id for run_id, hit in zip(runs, hits, strict=True) if hit]
    for run_id in runs:
        assert reaped.count(run_id) == 1
        assert [e.type for e in await events.replay(run_id)] == ["queued", "error"]


async def test_a_late_worker_cannot_overwrite_or_extend_an_ended_run(short_leases: pytest.MonkeyPatch) -> None:
    run_id = await events.create_run("acme", "crawl")
    await events.transition("acme", run_id, "running", {"pages_crawled": 0})
    await asyncio.sleep(1.2)
    await reaped_within(run_id, 5)
    # The worker was only slow: it comes back and finishes, renews, reports progress.
    assert await events.transition("acme", run_id, "complete", {"pages_crawled": 3}, result={"n": 3}) is None
    assert await update_run("acme", run_id, "running") is False
    assert not await leases.renew_lease("acme", run_id, 60)  # a reaped run is not resurrected
    with pytest.raises(RunEndedError):
        await events.publish(run_id, "running", {"pages_crawled": 4})
    record = await get_run("acme", run_id)
    assert record is not None and record.status == "error" and record.result is None
    assert record.error_message is not None and record.error_message.startswith("abandoned")
    assert [e.type for e in await events.replay(run_id)] == ["queued", "running", "error"]
    assert await leases.lease_deadline("acme", run_id) is None
    with pytest.raises(NotFoundError):
        await update_run("acme", str(uuid.uuid4()), "error")


async def test_a_held_lease_is_renewed_and_a_lost_one_stops_its_holder(short_leases: pytest.MonkeyPatch) -> None:
    run_id = await events.create_run("acme", "crawl")
    lost = asyncio.Event()
    async with leases.Lease("acme", run_id, on_lost=lost.set) as lease:
        assert not lease.lost
        for _ in range(5):
            await asyncio.sleep(0.4)
            deadline = await leases.lease_deadline("acme", run_id)
            assert deadline is not None and deadline > time.time()  # Redis's clock: this host's here
            assert run_id not in await leases.reap_expired_runs()
        await leases.release_lease("acme", run_id)  # what cancelling does to it
        await asyncio.wait_for(lost.wait(), 2)  # noticed at the next renewal (every 1/3 s)
        assert lease.lost
    assert await leases.lease_deadline("acme", run_id) is None  # and never brought back
    async with leases.Lease("acme", run_id) as again:
        assert again.lost  # a lease that is gone cannot be taken
