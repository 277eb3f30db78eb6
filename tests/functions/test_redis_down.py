"""Redis down: the crawl API and the run streams answer 503 with Retry-After (never 500), and a
crawl that could not start leaves no run behind."""

from __future__ import annotations

import socket
import uuid

import pytest

from agent_patterns.backends.redis import reset_redis
from agent_patterns.config import reset_settings
from agent_patterns.tenancy import issue_stream_token
from tests.conftest import bearer, function_client, tenant_rows


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_down(settings_env: pytest.MonkeyPatch) -> None:
    settings_env.setenv("REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
    settings_env.setenv("REDIS_CONNECT_TIMEOUT", "0.5")
    settings_env.setenv("CRAWL_ALLOWED_PRIVATE_HOSTS_UNSAFE", "127.0.0.1:9")
    reset_settings()
    reset_redis()


async def test_starting_a_crawl_with_redis_down_is_a_503_and_leaves_no_run(redis_down: None) -> None:
    tenant = f"r{uuid.uuid4().hex[:10]}"
    async with function_client("crawl") as api:
        response = await api.post("/v1/crawls", json={"url": "http://127.0.0.1:9/"}, headers=bearer(tenant))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "backend_unavailable"
    assert response.headers["Retry-After"] == "5"
    assert await tenant_rows(tenant, "runs") == 0


async def test_following_a_run_with_redis_down_is_a_503(redis_down: None) -> None:
    run_id = str(uuid.uuid4())
    async with function_client("streaming") as api:
        response = await api.get(f"/v1/runs/{run_id}/events", params={"token": issue_stream_token("acme", run_id)})
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
