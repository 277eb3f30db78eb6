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
        # Something stored through the embedded Redis must survive the restart.
        redis.Redis.from_url(banner_url(proc, "redis")).set("survives", "restart")
    assert proc.returncode == 0
    out = proc.stdout.read() if proc.stdout else ""
    assert "agent-patterns dev: stopped" in out
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
