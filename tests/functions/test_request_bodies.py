"""Every JSON body is read as written: an unknown field (a typo) or a value of the wrong JSON
type is a 422 that names it, never a silent default or coercion, and nothing runs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from agent_patterns.tenancy import issue_operator_token
from tests.conftest import bearer, function_client
from tests.llm_stub import StubProviders

ASK = [{"role": "user", "content": "hi"}]
REFUSED: list[tuple[str, str, str, dict[str, Any], str]] = [
    # function, method, path, body, what the message must name
    ("llm", "POST", "/v1/llm/complete", {"prompt": "hi", "max_token": 5}, "max_token"),
    ("llm", "POST", "/v1/llm/complete", {"prompt": "hi", "stream": True}, "/v1/chat/completions"),
    ("llm", "POST", "/v1/llm/complete", {"prompt": "hi", "temperature": False}, "temperature"),
    ("llm", "POST", "/v1/llm/complete", {"prompt": "hi", "max_tokens": "40"}, "max_tokens"),
    ("llm", "POST", "/v1/chat/completions", {"model": "default", "messages": ASK, "temperature": "0.5"}, "temperature"),
    ("llm", "POST", "/v1/chat/completions", {"model": "default", "messages": ASK, "stream": 1}, "stream"),
    ("llm", "POST", "/v1/answer", {"question": "what?", "stream": 0}, "stream"),
    ("llm", "POST", "/v1/answer", {"question": "what?", "top_k": 3}, "top_k"),
    ("search", "POST", "/v1/search", {"query": "sea", "limt": 5}, "limt"),
    ("search", "POST", "/v1/search", {"query": "sea", "limit": "5"}, "limit"),
    ("search", "POST", "/v1/documents", {"documents": [{"txt": "hello"}]}, "documents.0.txt"),
    ("crawl", "POST", "/v1/crawls", {"url": "https://example.com/", "max_page": 5}, "max_page"),
    ("crawl", "POST", "/v1/crawls", {"url": "https://example.com/", "max_pages": "5"}, "max_pages"),
    ("crawl", "POST", "/v1/crawls", {"url": "https://example.com/", "respect_robot": False}, "respect_robot"),
    ("crawl", "PUT", "/v1/webhooks", {"urls": [], "url": ["https://example.com/hook"]}, "url"),
    ("search", "POST", "/v1/search", {"query": "sea", "tenant_id": "globex"}, "tenant_id"),
    ("crawl", "PUT", "/v1/webhooks", {"urls": ["http://127.0.0.1/hook"]}, "urls.0"),  # raised by our own check
]


@pytest.mark.parametrize(("function", "method", "path", "body", "named"), REFUSED)
async def test_an_unknown_field_or_a_wrongly_typed_value_is_a_422_naming_it(
    stub: StubProviders, function: str, method: str, path: str, body: dict[str, Any], named: str
) -> None:
    async with function_client(function) as api:
        response = await api.request(method, path, json=body, headers=bearer("b" + uuid.uuid4().hex[:10]))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and named in error["message"], error
    assert error["param"] == (named if named != "/v1/chat/completions" else "stream"), error  # OpenAI's `param`
    assert stub.calls["openai"] == stub.calls["anthropic"] == 0  # refused before any provider call


async def test_operators_limits_take_dollars_as_json_numbers_and_refuse_unknown_fields(stub: StubProviders) -> None:
    tenant = "b" + uuid.uuid4().hex[:10]
    operator = {"Authorization": f"Bearer {issue_operator_token('ops@example.com')}"}
    async with function_client("llm") as api:
        typo = await api.put(f"/v1/admin/tenants/{tenant}/limits", json={"daily_token": 5}, headers=operator)
        dollars = await api.put(f"/v1/admin/tenants/{tenant}/limits", json={"daily_usd": 1.5}, headers=operator)
    assert typo.status_code == 422 and "daily_token" in typo.json()["error"]["message"]
    assert dollars.status_code == 200, dollars.text
    assert float(dollars.json()["overrides"]["daily_usd"]) == 1.5
