"""The `agent-patterns` command against a live server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from agent_patterns.runs import events
from agent_patterns.tenancy import issue_stream_token, issue_token
from agent_patterns_dev.gateway import load_function
from tests.conftest import ROOT, LiveServer, python_subprocess_env


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(load_function("streaming").app) as live:
        yield live


async def _follow(server: LiveServer, run_id: str, token: str, *extra: str) -> asyncio.subprocess.Process:
    """`agent-patterns events RUN_ID` against `server`, as a user runs it."""
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "agent_patterns_dev.cli", "events", run_id, "--api", server.url, "--token", token),
        *extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=python_subprocess_env(),
        cwd=ROOT,
    )


async def test_events_prints_a_runs_events_as_they_happen_until_it_ends(server: LiveServer) -> None:
    run_id = await events.create_run("acme", "crawl")
    token = issue_stream_token("acme", run_id)
    proc = await _follow(server, run_id, token, "--json")
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


async def test_ctrl_c_while_following_a_run_ends_quietly(server: LiveServer) -> None:
    import signal

    run_id = await events.create_run("acme", "crawl")
    proc = await _follow(server, run_id, issue_stream_token("acme", run_id))
    assert proc.stdout is not None
    assert "queued" in (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130
    assert err.decode().strip() == ""  # no traceback


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


@pytest.fixture(scope="module")
def llm_api() -> Iterator[LiveServer]:
    with LiveServer(load_function("llm").app) as live:
        yield live


async def test_usage_prints_the_ledger_as_a_table_and_limits_change_it(llm_api: LiveServer, stub: object) -> None:
    import uuid

    import httpx

    t = "c" + uuid.uuid4().hex[:10]
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(
            f"{llm_api.url}/v1/llm/complete",
            json={"prompt": f"cli usage {t}", "max_tokens": 20},
            headers={"Authorization": f"Bearer {issue_token(t)}"},
        )
    assert answer.status_code == 200, answer.text
    spent = answer.json()["tokens_used"]
    out = await asyncio.to_thread(cli, "usage", "--api", llm_api.url, "--tenant", t)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].split()[:2] == ["model", "calls"]
    row = next(line.split() for line in lines if line.startswith("gpt-4o "))
    assert row[1] == "1" and row[6] == str(spent)
    assert f"today: {spent} tokens used, 0 reserved" in out.stdout
    changed = await asyncio.to_thread(
        cli, "limits", "set", t, "--daily-tokens", "5", "--requests-per-minute", "none", "--api", llm_api.url
    )
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["overrides"]["daily_tokens"] == 5
    shown = await asyncio.to_thread(cli, "limits", "show", t, "--api", llm_api.url)
    assert json.loads(shown.stdout)["effective"]["daily_tokens"] == 5
    as_tenant = await asyncio.to_thread(cli, "limits", "show", t, "--api", llm_api.url, "--token", issue_token(t))
    assert as_tenant.returncode == 1 and "HTTP 403" in as_tenant.stderr
    bad = await asyncio.to_thread(cli, "usage", "--api", llm_api.url, "--tenant", t, "--from", "yesterday")
    assert bad.returncode == 1 and "HTTP 422" in bad.stderr


@pytest.fixture(scope="module")
def whole_api() -> Iterator[LiveServer]:
    from agent_patterns_dev.gateway import build_gateway

    with LiveServer(build_gateway()) as live:
        yield live


async def test_ingest_a_folder_then_search_and_ask_with_sources(
    whole_api: LiveServer, stub: object, tmp_path: Any
) -> None:
    import uuid

    stub_providers: Any = stub
    t = "i" + uuid.uuid4().hex[:10]
    docs = tmp_path / "docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "refunds.md").write_text("# Refunds\n\nRefunds are accepted within thirty days of purchase.\n")
    (docs / "guides" / "shipping.txt").write_text("Shipping takes five business days to Europe.\n")
    (docs / "logo.png").write_bytes(b"\x89PNG\r\n")  # not text: left out
    (docs / "empty.md").write_text(" \n")  # nothing to store: skipped, and said so
    # the folder and a file in it: that file is stored once (one request may not hold an id twice)
    named = (str(docs), str(docs / "refunds.md"))
    out = await asyncio.to_thread(cli, "ingest", *named, "--api", whole_api.url, "--tenant", t)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2 files, 2 chunks stored (1 skipped)"
    assert f"skipped {docs / 'empty.md'}: empty" in out.stderr and "] 3/3 files" in out.stderr, out.stderr
    found = await asyncio.to_thread(
        cli, "search", "refunds accepted", "--mode", "keyword", "--api", whole_api.url, "--tenant", t
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[0].startswith(" 1. ") and "refunds.md" in found.stdout.splitlines()[0]
    stub_providers.script["openai"].append({"content": "Within thirty days [1]."})
    asked = await asyncio.to_thread(cli, "ask", "refunds accepted", "--api", whole_api.url, "--tenant", t)
    assert asked.returncode == 0, asked.stderr
    lines = asked.stdout.splitlines()
    assert lines[0] == "Within thirty days [1]." and "Sources:" in lines
    assert lines[-1].startswith("  [1] refunds ") and lines[-1].endswith("refunds.md")
    missing = await asyncio.to_thread(cli, "ingest", str(tmp_path / "nope"), "--api", whole_api.url, "--tenant", t)
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
