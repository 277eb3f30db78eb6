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
    claimed = await api.post("/v1/llm/complete", json={"prompt": p, "tenant_id": "globex"}, headers=bearer("acme"))
    assert claimed.status_code == 422 and "your token" in claimed.json()["error"]["message"]  # never taken from a body
    first = await api.post("/v1/llm/complete", json={"prompt": p}, headers=bearer("acme"))
    assert first.status_code == 200 and first.json()["cached"] is False, first.text
    other = await api.post("/v1/llm/complete", json={"prompt": p}, headers=bearer("globex"))
    assert other.status_code == 200 and other.json()["cached"] is False  # acme's answer was not filed under globex
    again = await api.post("/v1/llm/complete", json={"prompt": p}, headers=bearer("acme"))
    assert again.status_code == 200 and again.json()["cached"] is True  # it was filed under acme
    assert stub.calls["openai"] == 2


def operator() -> dict[str, str]:
    from agent_patterns.tenancy import issue_operator_token

    return {"Authorization": f"Bearer {issue_operator_token('ops@example.com')}"}


async def test_usage_reports_the_tenants_calls_by_model_and_by_day(api: httpx.AsyncClient, stub: StubProviders) -> None:
    import uuid

    t = "u" + uuid.uuid4().hex[:10]
    body = {"prompt": prompt(), "max_tokens": 30}
    first = (await api.post("/v1/llm/complete", json=body, headers=bearer(t))).json()
    await api.post("/v1/llm/complete", json=body, headers=bearer(t))  # a cache hit
    fast = (await api.post("/v1/llm/complete", json={**body, "model": "fast"}, headers=bearer(t))).json()
    by_model = await api.get("/v1/usage", params={"group_by": "model"}, headers=bearer(t))
    assert by_model.status_code == 200, by_model.text
    data = by_model.json()
    groups = {g["model"]: g for g in data["groups"]}
    assert set(groups) == {"gpt-4o", "gpt-4o-mini"}
    assert groups["gpt-4o"]["calls"] == 1 and groups["gpt-4o"]["cache_hits"] == 1
    assert groups["gpt-4o"]["tokens"] == first["tokens_used"] and groups["gpt-4o-mini"]["tokens"] == fast["tokens_used"]
    assert data["totals"]["tokens"] == first["tokens_used"] + fast["tokens_used"]
    assert abs(data["totals"]["cost_usd"] - (first["cost_usd"] + fast["cost_usd"])) < 1e-9
    assert data["budget"]["used_tokens"] == data["totals"]["tokens"] and data["budget"]["reserved_tokens"] == 0
    assert data["budget"]["remaining_tokens"] == data["budget"]["daily_tokens"] - data["totals"]["tokens"]
    by_day = (await api.get("/v1/usage", params={"group_by": "day"}, headers=bearer(t))).json()
    assert [g["day"] for g in by_day["groups"]] == [dt.datetime.now(dt.UTC).date().isoformat()]
    other = (await api.get("/v1/usage", headers=bearer("u" + uuid.uuid4().hex[:10]))).json()
    assert other["groups"] == [] and other["totals"]["calls"] == 0  # tenants see only their own
    refused = (
        {"from": "2026-02-30"},
        {"from": "2026-03-02", "to": "2026-03-01"},
        {"group_by": "tenant"},
        {"to": "0"},  # not 1970-01-01 (pydantic's dates take a number as a Unix time)
        {"from": "1764720000"},
        {"from": "2026-3-1"},
    )
    for params in refused:
        bad = await api.get("/v1/usage", params=params, headers=bearer(t))
        assert bad.status_code == 422, (params, bad.text)
        assert next(iter(params)) in bad.json()["error"]["message"]


async def test_operators_change_a_tenants_limits_without_a_deploy(
    api: httpx.AsyncClient, stub: StubProviders, settings_env: pytest.MonkeyPatch
) -> None:
    import uuid

    settings_env.setenv("LLM_LIMITS_CACHE_SECONDS", "0")
    reset_settings()
    t = "o" + uuid.uuid4().hex[:10]
    url = f"/v1/admin/tenants/{t}/limits"
    assert (await api.put(url, json={"requests_per_minute": 1}, headers=bearer(t))).status_code == 403
    assert (await api.put(url, json={"requests_per_minute": 1})).status_code == 401
    bad = await api.put(url, json={"requests_per_minute": 1, "rpm": 2}, headers=operator())
    assert bad.status_code == 422 and "rpm" in bad.text
    put = await api.put(url, json={"requests_per_minute": 1, "daily_usd": "2.50"}, headers=operator())
    assert put.status_code == 200, put.text
    assert put.json()["overrides"]["requests_per_minute"] == 1
    ok = await api.post("/v1/llm/complete", json={"prompt": prompt()}, headers=bearer(t))
    assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-requests"] == "1"
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    limited = await api.post("/v1/llm/complete", json={"prompt": prompt()}, headers=bearer(t))
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) <= 61
    shown = (await api.get(url, headers=operator())).json()
    assert shown["effective"]["daily_usd"] == 2.5 and shown["effective"]["requests_per_minute"] == 1
    cleared = await api.put(url, json={"requests_per_minute": None}, headers=operator())
    assert cleared.json()["overrides"]["requests_per_minute"] is None
    assert cleared.json()["overrides"]["daily_usd"] == "2.500000000"  # kept: not named in the change
    again = await api.post("/v1/llm/complete", json={"prompt": prompt()}, headers=bearer(t))
    assert again.status_code == 200 and "x-ratelimit-limit-requests" not in again.headers
