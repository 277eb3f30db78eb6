"""`agent-patterns dev` from the outside: how it stops (SIGTERM), whom it refuses (a second
server on its data folder), how it fails to start (an unreachable REDIS_URL, a port in use), and
what its gateway answers itself. Real processes and signals; every check is on what a user sees:
exit codes, output lines, HTTP answers, and which Redis and Postgres processes are running."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from tests.conftest import ROOT
from tests.e2e.test_dev_server import backend_processes, banner_url, dev_env, free_port

DEV = ("uv", "run", "--no-sync", "agent-patterns", "dev")


def start_dev(data_dir: Path, port: int, **extra_env: str) -> subprocess.Popen[str]:
    """`agent-patterns dev` in a session of its own, so that cleanup can end the whole group."""
    return subprocess.Popen(
        [*DEV, "--port", str(port)],
        cwd=ROOT,
        env=dev_env(data_dir, **extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_healthy(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.communicate()[1])
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError("dev server did not become healthy")


def server_pid(proc: subprocess.Popen[str]) -> int:
    """The Python process of `agent-patterns dev` (`uv run` starts it as its child)."""
    for child in psutil.Process(proc.pid).children(recursive=True):
        if "agent-patterns" in " ".join(child.cmdline()):
            return int(child.pid)
    raise AssertionError("no agent-patterns process under uv")


def gone_within(data_dir: Path, seconds: float) -> list[psutil.Process]:
    """The embedded servers of `data_dir` still running after up to `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := backend_processes(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def finish(proc: subprocess.Popen[str], data_dir: Path) -> None:
    """Leave nothing running, whatever the test did: the group, then any server left behind."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    for leftover in backend_processes(data_dir):  # a failing test may have orphaned them
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.kill()


def run_dev(data_dir: Path, port: int, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """A dev server expected to refuse to start: its exit code and output (killed after 60 s)."""
    proc = start_dev(data_dir, port, **extra_env)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        finish(proc, data_dir)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("to", ["process", "group"])
def test_sigterm_stops_everything_it_started_and_exits_0_like_ctrl_c(tmp_path: Path, to: str) -> None:
    """`kill PID` (a process manager) or SIGTERM to the process group (`timeout`, a CI runner)."""
    data_dir, port = tmp_path / "data", free_port()
    proc = start_dev(data_dir, port)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        python = psutil.Process(server_pid(proc))
        servers = backend_processes(data_dir)
        assert {"redis-server", "postgres"} <= {p.name() for p in servers}
        if to == "group":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "agent-patterns dev: stopped" in out
        assert not python.is_running() or python.status() == psutil.STATUS_ZOMBIE
        assert gone_within(data_dir, 5) == []  # the embedded Redis and Postgres are gone
    finally:
        finish(proc, data_dir)


HOLD_AND_HANG = """
import fcntl, os, sys, time
os.makedirs(sys.argv[1])
fd = os.open(os.path.join(sys.argv[1], "lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("held", flush=True)
time.sleep(300)
"""


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """One dev server for the tests that only look at it, started on a folder whose previous
    owner was SIGKILLed while holding it (its lock file, with its pid, is still there)."""
    data_dir = tmp_path_factory.mktemp("held") / "data"
    owner = subprocess.Popen([sys.executable, "-c", HOLD_AND_HANG, str(data_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "held"
    finally:
        owner.kill()
        owner.wait(timeout=10)
    assert (data_dir / "lock").read_text().strip() == str(owner.pid)  # stale, from a killed process
    port = free_port()
    proc = start_dev(data_dir, port)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}", proc, data_dir
    finally:
        finish(proc, data_dir)


def test_a_second_dev_server_on_the_same_folder_is_refused_and_the_first_keeps_its_redis(
    running: tuple[str, subprocess.Popen[str], Path],
) -> None:
    base, first, data_dir = running
    holder = server_pid(first)
    redis_before = {p.pid for p in backend_processes(data_dir) if p.name() == "redis-server"}
    assert len(redis_before) == 1
    out = run_dev(data_dir, free_port())
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(data_dir) in lines[0] and f"pid {holder}" in lines[0] and "AGENT_PATTERNS_DATA_DIR" in lines[0]
    assert "llm, search" not in out.stdout  # no banner: it never started
    # The first server still owns its Redis: the same process, reachable through its socket.
    assert {p.pid for p in backend_processes(data_dir) if p.name() == "redis-server"} == redis_before
    assert redis.Redis.from_url(banner_url(first, "redis")).ping()
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200


def test_the_gateways_own_answers_carry_a_request_id_and_the_error_shape(
    running: tuple[str, subprocess.Popen[str], Path],
) -> None:
    from agent_patterns.web import ErrorBody

    base = running[0]
    shape = set(ErrorBody.model_fields["error"].annotation.model_fields)  # type: ignore[union-attr]

    health = httpx.get(f"{base}/healthz", timeout=5)
    assert health.status_code == 200 and health.headers.get("x-request-id")
    mine = httpx.get(f"{base}/healthz", headers={"x-request-id": "trace-me"}, timeout=5)
    assert mine.headers["x-request-id"] == "trace-me"

    missing = httpx.get(f"{base}/no/such/route", timeout=5)
    assert missing.status_code == 404 and missing.headers.get("x-request-id")
    error = ErrorBody.model_validate(missing.json()).error
    assert set(missing.json()["error"]) == shape
    assert (error.code, error.type, error.param) == ("not_found", "not_found_error", None)
    function_404 = httpx.get(f"{base}/llm/no-such-route", timeout=5).json()  # a function's own 404
    assert set(function_404["error"]) == shape and function_404["error"]["type"] == error.type

    post = httpx.post(f"{base}/healthz", json={}, timeout=5)
    assert post.status_code == 405, post.text
    assert post.headers.get("allow") == "GET, HEAD" and post.headers.get("x-request-id")
    refused = ErrorBody.model_validate(post.json()).error
    assert set(post.json()["error"]) == shape
    assert refused.code == "method_not_allowed" and "POST" in refused.message and refused.param is None


def test_an_unreachable_redis_url_is_named_with_its_address_and_nothing_stays_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    dead = free_port()  # nothing listens there
    out = run_dev(data_dir, free_port(), REDIS_URL=f"redis://:hunter2@127.0.0.1:{dead}/0")
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "REDIS_URL" in lines[0] and f"127.0.0.1:{dead}" in lines[0], lines[0]
    assert "hunter2" not in out.stderr + out.stdout  # the address, without its password
    assert "see the message above" not in lines[0]
    assert gone_within(data_dir, 5) == []  # the embedded Postgres it started for the attempt is gone


def test_a_port_in_use_fails_in_one_line_before_the_banner_and_starts_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_dev(data_dir, port)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.strip() == f"agent-patterns dev: port {port} is in use; pass --port or stop the other server"
    assert "llm, search" not in out.stdout  # no banner for a server that never served
    assert gone_within(data_dir, 5) == []


def test_sigterm_while_the_backends_start_still_stops_them(tmp_path: Path) -> None:
    """The signal lands as soon as the embedded Redis runs, while Postgres is still starting:
    it is held until both have started (and are known), then everything stops. (A race: without
    the holding, this catches the orphaned Postgres in about one run out of three.)"""
    data_dir = tmp_path / "data"
    proc = start_dev(data_dir, free_port())
    try:
        deadline = time.monotonic() + 30
        while not any(p.name() == "redis-server" for p in backend_processes(data_dir)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "agent-patterns dev: stopped" in out and "llm, search" not in out  # stopped before serving
        assert gone_within(data_dir, 5) == []
    finally:
        finish(proc, data_dir)
