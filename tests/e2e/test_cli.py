"""The `agent-patterns` command against a live server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agent_patterns.runs import events
from agent_patterns.tenancy import issue_stream_token, issue_token
from agent_patterns_dev.gateway import load_function
from tests.conftest import ROOT, LiveServer, python_subprocess_env


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(load_function("streaming").app) as live:
        yield live


async def test_events_prints_a_runs_events_as_they_happen_until_it_ends(server: LiveServer) -> None:
    run_id = await events.create_run("acme", "crawl")
    token = issue_stream_token("acme", run_id)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent_patterns_dev.cli",
        "events",
        run_id,
        "--api",
        server.url,
        "--token",
        token,
        "--json",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=python_subprocess_env(),
        cwd=ROOT,
    )
    assert proc.stdout is not None
    first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    assert first["type"] == "queued"  # printed before the run has gone any further
    await events.publish(run_id, "running", {"url": "https://a.example/", "pages_crawled": 1, "max_pages": 2})
    await events.publish(run_id, "complete", {"pages_crawled": 1})
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    rest = [json.loads(line) for line in out.decode().splitlines()]
    assert [e["type"] for e in rest] == ["running", "complete"]
    assert [first["id"]] + [e["id"] for e in rest] == [e.id for e in await events.replay(run_id)]


def test_events_reports_access_errors_clearly(server: LiveServer) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent_patterns_dev.cli",
            "events",
            "6c1f6bb4-38a4-4c47-8d35-2a3b5d2e1f00",
            "--api",
            server.url,
            "--token",
            "nonsense",
        ],
        capture_output=True,
        text=True,
        env=python_subprocess_env(),
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 1
    assert "HTTP 401: invalid token" in out.stderr


@pytest.fixture(scope="module")
def crawl_api() -> Iterator[LiveServer]:
    with LiveServer(load_function("crawl").app) as live:
        yield live


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_patterns_dev.cli", *args],
        capture_output=True,
        text=True,
        env=python_subprocess_env(),
        cwd=ROOT,
        timeout=60,
    )


async def test_cancel_ends_a_run_and_says_so_and_refuses_an_ended_one(crawl_api: LiveServer) -> None:
    run_id = await events.create_run("acme", "crawl", {"url": "https://example.com/", "max_pages": 1})
    token = issue_token("acme")
    out = await asyncio.to_thread(cli, "cancel", run_id, "--api", crawl_api.url, "--token", token)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"run {run_id} cancelled (status: error)\n"
    assert [e.type for e in await events.replay(run_id)] == ["queued", "error"]
    done = await events.create_run("acme", "crawl", {"url": "https://example.com/", "max_pages": 1})
    await events.transition("acme", done, "complete", {"pages_crawled": 1}, result={"pages_crawled": 1})
    out = await asyncio.to_thread(cli, "cancel", done, "--api", crawl_api.url, "--token", token)
    assert out.returncode == 1
    assert f"HTTP 409: run {done} has already ended: complete" in out.stderr
