"""`agent-patterns dev`: starts its own embedded backends, serves every function, stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import redis

from tests.conftest import ROOT

FUNCTIONS = ("llm", "search", "crawl", "streaming")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dev_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "AUTH_SECRET")}
    env["AGENT_PATTERNS_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def backend_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmd and ("postgres" in cmd or "redis-server" in cmd):
            found.append(proc)
    return found


@contextmanager
def dev_server(data_dir: Path, **extra_env: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        ["uv", "run", "--no-sync", "agent-patterns", "dev", "--port", str(port)],
        cwd=ROOT,
        env=dev_env(data_dir, **extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("dev server did not become healthy")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def banner_url(proc: subprocess.Popen[str], backend: str) -> str:
    """The backend URL the dev server printed in its start banner."""
    assert proc.stdout is not None
    for line in proc.stdout:
        words = line.split()
        if words[:1] == [backend]:
            return words[1]
    raise AssertionError(f"no {backend} line in the banner")


def token(data_dir: Path, tenant: str) -> str:
    out = subprocess.run(
        ["uv", "run", "--no-sync", "agent-patterns", "token", "--tenant", tenant],
        cwd=ROOT,
        env=dev_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def test_dev_server_serves_every_function_stops_cleanly_and_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with dev_server(data_dir) as (base, proc):
        for name in FUNCTIONS:
            health = httpx.get(f"{base}/{name}/healthz", timeout=5)
            assert health.status_code == 200, health.text
            assert health.json()["function"] == name and health.json()["status"] == "ok"
        bearer = token(data_dir, "acme")
        assert bearer.count(".") == 2 and "\n" not in bearer  # the token and nothing else
        unauth = httpx.post(f"{base}/v1/documents", json={}, timeout=5)
        assert unauth.status_code == 401
        assert httpx.get(f"{base}/no/such/route", timeout=5).status_code == 404
        secret = "eyJsecret.token.value"
        httpx.get(f"{base}/v1/runs/00000000-0000-0000-0000-000000000000/events?token={secret}", timeout=5)
        # Something stored through the embedded Redis must survive the restart.
        redis.Redis.from_url(banner_url(proc, "redis")).set("survives", "restart")
    assert proc.returncode == 0
    out = proc.stdout.read() if proc.stdout else ""
    assert "agent-patterns dev: stopped" in out
    assert "/events?token=*** " in out and secret not in out  # tokens never reach the access log
    time.sleep(1)
    assert backend_processes(data_dir) == []  # nothing left running after Ctrl-C
    with dev_server(data_dir) as (base, proc):
        assert redis.Redis.from_url(banner_url(proc, "redis")).get("survives") == b"restart"
        # The second run keeps the first run's signing secret, so old tokens stay valid.
        assert token(data_dir, "acme").split(".")[0] == bearer.split(".")[0]


def test_crawl_command_follows_a_local_crawl_to_its_summary(tmp_path: Path) -> None:
    """The whole local path: CLI → crawl API → local queue → worker → run events → SSE → CLI."""
    from tests.conftest import LiveServer
    from tests.crawl_site import build_site, counting_site

    other_app, _ = counting_site()
    with LiveServer(other_app) as other:
        site_app, _ = build_site(other_origin=other.url, private_origin=other.url, slow_seconds=0.1)
        with LiveServer(site_app) as site:
            allow = {"CRAWL_ALLOWED_PRIVATE_HOSTS_UNSAFE": f"127.0.0.1:{site.port}"}
            data_dir = tmp_path / "data"
            with dev_server(data_dir, **allow) as (base, _):
                out = subprocess.run(
                    [
                        "uv",
                        "run",
                        "--no-sync",
                        "agent-patterns",
                        "crawl",
                        site.url + "/",
                        "--max-pages",
                        "5",
                        "--follow",
                        "--api",
                        base,
                        "--tenant",
                        "acme",
                    ],
                    cwd=ROOT,
                    env=dev_env(data_dir),
                    capture_output=True,
                    text=True,
                    timeout=180,
                )
    assert out.returncode == 0, out.stdout + out.stderr
    progress = [line for line in out.stderr.splitlines() if line.startswith("[")]
    assert progress and progress[-1].startswith("[" + "#" * 30 + "] 5/5")
    assert "complete in" in out.stdout
    table = {line[:15].strip(): line[15:].strip() for line in out.stdout.splitlines() if line.startswith("  ")}
    assert table["pages"] == "5" and int(table["links"]) > 0 and table["blocked URLs"].isdigit()


def slow_site(delay_s: float) -> object:
    """Pages that each take `delay_s` to answer and link to ten more: a crawl that runs for long."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.crawl_site import page

    async def numbered(request: Request) -> Response:
        n = int(request.path_params.get("n", 0))
        await asyncio.sleep(delay_s)
        return page(f"Page {n}", " ".join(f'<a href="/p/{n * 10 + i}">{i}</a>' for i in range(1, 11)))

    return Starlette(routes=[Route("/", numbered), Route("/p/{n:int}", numbered)])


def test_ctrl_c_during_a_crawl_stops_everything_within_seconds_and_marks_the_run(tmp_path: Path) -> None:
    from tests.conftest import LiveServer

    with LiveServer(slow_site(2.0)) as site:
        allow = {"CRAWL_ALLOWED_PRIVATE_HOSTS_UNSAFE": f"127.0.0.1:{site.port}"}
        data_dir = tmp_path / "data"
        with dev_server(data_dir, **allow) as (base, proc):
            headers = {"Authorization": f"Bearer {token(data_dir, 'acme')}"}
            started = httpx.post(f"{base}/v1/crawls", json={"url": site.url + "/", "max_pages": 100}, headers=headers)
            assert started.status_code == 202, started.text
            run_id = started.json()["run_id"]
            deadline = time.monotonic() + 60
            while True:  # until Chromium is up and the run is still going
                children = psutil.Process(proc.pid).children(recursive=True)
                report = httpx.get(f"{base}/v1/crawls/{run_id}", headers=headers).json()
                assert report["status"] in ("queued", "running"), report
                if report["status"] == "running" and any(c.name() == "chromium" for c in children):
                    break
                assert time.monotonic() < deadline, f"the crawl never started: {report}"
                time.sleep(0.2)
            time.sleep(1)
            children = psutil.Process(proc.pid).children(recursive=True)
            began = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
            stopped_in = time.monotonic() - began
        out = proc.stdout.read() if proc.stdout else ""
        assert proc.returncode == 0, out
        assert stopped_in < 15, f"took {stopped_in:.1f} s to stop"
        survivors = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert survivors == [], survivors  # Chromium, its driver, Redis and Postgres are all gone
        assert backend_processes(data_dir) == []
        with dev_server(data_dir, **allow) as (base, proc):
            report = httpx.get(f"{base}/v1/crawls/{run_id}", headers=headers).json()
        assert report["status"] == "error" and "interrupted" in report["error_message"], report
        assert f"run {run_id} interrupted" in out


def test_a_bad_database_url_fails_in_one_line_and_leaves_nothing_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run(
        ["uv", "run", "--no-sync", "agent-patterns", "dev", "--port", str(free_port())],
        cwd=ROOT,
        env=dev_env(data_dir, DATABASE_URL=f"postgresql://nobody@127.0.0.1:{port}/none"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot start" in lines[0] and "DATABASE_URL" in lines[0], out.stderr
    assert backend_processes(data_dir) == []  # the embedded Redis it started for the attempt is gone
