"""Shared fixtures: real Redis and Postgres (embedded unless REDIS_URL / DATABASE_URL are given),
and a final check that nothing the run started is still running."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

# Tests never touch the developer's own data dir or a real AWS account.
_TMP = Path(tempfile.mkdtemp(prefix="agent-patterns-tests-"))
os.environ.setdefault("AGENT_PATTERNS_DATA_DIR", str(_TMP / "data"))
os.environ["AUTH_MODE"] = "local"
os.environ["AUTH_SECRET"] = "test-secret-not-for-production-0123456789"
os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for _var in ("AWS_LAMBDA_FUNCTION_NAME", "AWS_PROFILE"):
    os.environ.pop(_var, None)


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM (`timeout`, a cancelled CI job) unwinds like Ctrl-C, so the servers stop too."""
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _stop_like_ctrl_c)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "shared"


@pytest.fixture(scope="session", autouse=True)
def backend_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start the embedded servers once (unless URLs are given) and export their URLs, so
    subprocesses share them; at the end, fail if any process the run started survives."""
    from agent_patterns_dev import embedded
    from agent_patterns_dev.environment import export_backends

    export_backends(_TMP / "data")
    try:
        yield {"REDIS_URL": os.environ["REDIS_URL"], "DATABASE_URL": os.environ["DATABASE_URL"]}
    finally:
        servers = embedded.started_pids()
        embedded.stop()
    leftovers = _leftover_processes(servers, [_TMP, tmp_path_factory.getbasetemp()])
    shutil.rmtree(_TMP, ignore_errors=True)
    assert not leftovers, f"processes started by the test run are still running: {leftovers}"


def _leftover_processes(pids: set[int], folders: list[Path]) -> list[str]:
    """Live processes this run started: its servers, its descendants, anything running from its folders."""
    import time

    import psutil

    me = psutil.Process()
    deadline = time.monotonic() + 10  # a process that was just told to stop may need a moment
    while True:
        found = {p.pid: p for p in me.children(recursive=True)}
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.pid in pids or any(str(folder) in cmd for folder in folders):
                found[proc.pid] = proc
        alive = []
        for proc in found.values():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.fixture(autouse=True)
async def _close_backends() -> AsyncIterator[None]:
    """Each test has its own event loop; close the clients bound to it when it ends."""
    yield
    from agent_patterns.backends import postgres, redis

    client = redis.current_client()
    if client is not None:
        await client.aclose()
        redis._clients.pop(asyncio.get_running_loop(), None)
    await postgres.close_postgres()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Change environment variables for one test, with settings re-read before and after."""
    from agent_patterns.config import reset_settings

    reset_settings()
    yield monkeypatch
    monkeypatch.undo()
    reset_settings()


def python_subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "layers" / "patterns"), env.get("PYTHONPATH")]))
    return env


PYTHON = sys.executable


class LiveServer:
    """An ASGI app under a real uvicorn server in a background thread (its own event loop)."""

    def __init__(self, app: object) -> None:
        import socket
        import threading

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="module")
def stub_server() -> Iterator[tuple[Any, LiveServer]]:
    """Stub OpenAI and Anthropic APIs on localhost (tests/llm_stub.py)."""
    from tests.llm_stub import StubProviders

    stub = StubProviders()
    with LiveServer(stub.app()) as live:
        yield stub, live


@pytest.fixture
async def stub(stub_server: tuple[Any, LiveServer], settings_env: pytest.MonkeyPatch) -> Any:
    """The stub providers, reset, with the SDKs pointed at them and short timeouts."""
    from agent_patterns.backends import get_redis
    from agent_patterns.config import reset_settings
    from agent_patterns.llm import cache
    from agent_patterns.llm.providers import reset_clients

    providers, live = stub_server
    providers.reset()
    settings_env.setenv("OPENAI_API_KEY", "sk-test-openai")
    settings_env.setenv("OPENAI_BASE_URL", f"{live.url}/v1")
    settings_env.setenv("ANTHROPIC_API_KEY", "sk-test-anthropic")
    settings_env.setenv("ANTHROPIC_BASE_URL", live.url)
    settings_env.setenv("LLM_ATTEMPT_TIMEOUT_SECONDS", "1")
    settings_env.setenv("LLM_TOTAL_TIMEOUT_SECONDS", "6")
    reset_settings()
    reset_clients()
    cache.memory.clear()
    await get_redis().delete("llm:breaker:openai:failures", "llm:breaker:openai:open")
    from agent_patterns.llm import breaker

    breaker.forget_state()
    return providers


async def tenant_rows(tenant: str, table: str) -> int:
    """Rows in one of the tenant's tables, read from Postgres itself; 0 when it has none yet."""
    from psycopg import sql

    from agent_patterns.backends import connection

    async with connection() as db:
        cur = await db.execute("SELECT to_regclass(%s) IS NOT NULL", (f"tenant_{tenant}.{table}",))
        row = await cur.fetchone()
        if not (row and row[0]):
            return 0
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(f"tenant_{tenant}"), sql.Identifier(table))
        cur = await db.execute(query)
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def bearer(tenant: str = "acme") -> dict[str, str]:
    """The Authorization header of a local bearer token for `tenant`."""
    from agent_patterns.tenancy import issue_token

    return {"Authorization": f"Bearer {issue_token(tenant)}"}


@asynccontextmanager
async def function_client(name: str) -> AsyncIterator[Any]:
    """An HTTP client of one function's app, in-process (no server)."""
    import httpx

    from agent_patterns_dev.gateway import load_function

    transport = httpx.ASGITransport(app=load_function(name).app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        yield client


@contextmanager
def captured_crawl_jobs(settings_env: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Crawl job messages captured in a list instead of sent to a queue (or run)."""
    from agent_patterns.backends.sqs import set_local_consumer
    from agent_patterns.config import reset_settings

    settings_env.delenv("CRAWL_QUEUE_URL", raising=False)
    reset_settings()
    messages: list[dict[str, Any]] = []
    set_local_consumer(messages.append)
    try:
        yield messages
    finally:
        set_local_consumer(None)
