"""POST /v1/llm/complete: status mapping through the llm function's app."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest

from agent_patterns.config import reset_settings
from tests.conftest import bearer, function_client
from tests.llm_stub import StubProviders
from tests.patterns.test_llm import assert_retry_after_is_next_utc_day, prompt


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with function_client("llm") as client:
        yield client


async def test_200_with_the_result_fields_then_a_cached_answer(api: httpx.AsyncClient, stub: StubProviders) -> None:
    body = {"prompt": prompt(), "agent_type": "summarizer", "max_tokens": 40}
    first = await api.post("/v1/llm/complete", json=body, headers=bearer("acme"))
    assert first.status_code == 200, first.text
    data = first.json()
    assert set(data) == {"content", "tokens_used", "cost_usd", "cached", "provider", "model"}
    assert data["cached"] is False and data["provider"] == "openai" and data["tokens_used"] > 0
    again = (await api.post("/v1/llm/complete", json=body, headers=bearer("acme"))).json()
    assert again["cached"] is True and again["tokens_used"] == 0 and again["content"] == data["content"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "hi", "max_tokens": -5}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 100000}, "max_tokens"),
        ({"prompt": "hi", "temperature": 9}, "temperature"),
        ({"prompt": "x" * 100_001}, "prompt"),
        ({"prompt": "hi", "model": "nope"}, "unknown model"),
    ],
)
async def test_invalid_input_is_422(
    api: httpx.AsyncClient, stub: StubProviders, body: dict[str, object], field: str
) -> None:
    response = await api.post("/v1/llm/complete", json=body, headers=bearer("acme"))
    assert response.status_code == 422 and field in response.json()["error"]["message"]
    assert stub.calls.total() == 0


async def test_budget_exhausted_is_429_until_the_next_utc_day(
    api: httpx.AsyncClient, stub: StubProviders, settings_env: pytest.MonkeyPatch
) -> None:
    settings_env.setenv("LLM_DAILY_TOKEN_BUDGET", "10")
    reset_settings()
    before = dt.datetime.now(dt.UTC)
    response = await api.post("/v1/llm/complete", json={"prompt": prompt()}, headers=bearer("acme"))
    after = dt.datetime.now(dt.UTC)
    assert response.status_code == 429 and response.json()["error"]["code"] == "budget_exceeded"
    assert_retry_after_is_next_utc_day(response.headers["retry-after"], before, after)
    assert stub.calls.total() == 0  # refused before any provider was asked


async def test_no_provider_answering_or_configured_is_503(
    api: httpx.AsyncClient, stub: StubProviders, settings_env: pytest.MonkeyPatch
) -> None:
    stub.default["openai"] = {"status": 500}
    stub.default["anthropic"] = {"status": 500}
    response = await api.post("/v1/llm/complete", json={"prompt": prompt()}, headers=bearer("acme"))
    assert response.status_code == 503 and response.json()["error"]["code"] == "providers_unavailable"
    assert response.headers["retry-after"] == "5"
    settings_env.delenv("OPENAI_API_KEY")
    settings_env.delenv("ANTHROPIC_API_KEY")
    reset_settings()
    response = await api.post("/v1/llm/complete", json={"prompt": prompt()}, headers=bearer("acme"))
    assert response.status_code == 503 and "OPENAI_API_KEY" in response.json()["error"]["message"]


async def test_the_tenant_comes_from_the_token(api: httpx.AsyncClient, stub: StubProviders) -> None:
    assert (await api.post("/v1/llm/complete", json={"prompt": "hi"})).status_code == 401
    p = prompt()
    first = await api.post("/v1/llm/complete", json={"prompt": p, "tenant_id": "globex"}, headers=bearer("acme"))
    assert first.status_code == 200 and first.json()["cached"] is False, first.text
    other = await api.post("/v1/llm/complete", json={"prompt": p}, headers=bearer("globex"))
    assert other.status_code == 200 and other.json()["cached"] is False  # acme's answer was not filed under globex
    again = await api.post("/v1/llm/complete", json={"prompt": p}, headers=bearer("acme"))
    assert again.status_code == 200 and again.json()["cached"] is True  # it was filed under acme
    assert stub.calls["openai"] == 2
