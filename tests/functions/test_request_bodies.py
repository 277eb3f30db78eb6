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
    # raised past the body model, still naming the field
    ("llm", "POST", "/v1/chat/completions", {"model": "nope", "messages": ASK}, "model"),
    ("search", "POST", "/v1/search", {"vector": [0.1]}, "vector"),
    # a union (`bool | name`, `str | [parts]`): the alternative the value was meant for, not pydantic's member tags
    ("crawl", "POST", "/v1/crawls", {"url": "https://example.com/", "index": "BAD NAME"}, "index"),
    ("crawl", "POST", "/v1/crawls", {"url": "https://example.com/", "index": 5}, "index"),
    (
        "llm",
        "POST",
        "/v1/chat/completions",
        {"model": "default", "messages": [{"role": "user", "content": [{"type": "audio", "data": "x"}]}]},
        "messages.0.content.0.type",
    ),
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


@pytest.mark.parametrize(
    ("field", "largest"),
    [
        ("requests_per_minute", 2**31 - 1),  # integer columns
        ("tokens_per_minute", 2**31 - 1),
        ("daily_tokens", 2**63 - 1),  # bigint columns
        ("monthly_tokens", 2**63 - 1),
    ],
)
async def test_a_limit_beyond_its_column_is_a_422_naming_it_and_the_stored_limits_stay(
    stub: StubProviders, field: str, largest: int
) -> None:
    tenant = "b" + uuid.uuid4().hex[:10]
    path = f"/v1/admin/tenants/{tenant}/limits"
    operator = {"Authorization": f"Bearer {issue_operator_token('ops@example.com')}"}
    async with function_client("llm") as api:
        kept = await api.put(path, json={field: 7}, headers=operator)
        over = await api.put(path, json={field: largest + 1}, headers=operator)
        at_most = await api.put(path, json={"daily_usd": 2, field: largest}, headers=operator)
        after = await api.get(path, headers=operator)
    assert kept.status_code == 200, kept.text
    assert over.status_code == 422, over.text
    error = over.json()["error"]
    assert error["param"] == field and str(largest) in error["message"], error
    assert at_most.status_code == 200, at_most.text  # the column's own maximum is stored
    assert after.json()["overrides"][field] == largest


@pytest.mark.parametrize(("function", "path"), [("llm", "/v1/chat/completions"), ("search", "/v1/search")])
@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
async def test_a_body_not_sent_as_json_is_a_415_saying_which_content_type_to_send(
    function: str, path: str, content_type: str | None
) -> None:
    headers = bearer("b" + uuid.uuid4().hex[:10])
    if content_type:
        headers["content-type"] = content_type
    async with function_client(function) as api:  # what `curl -d '{...}'` sends
        response = await api.post(path, content=b'{"query": "sea"}', headers=headers)
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type" and "content-type: application/json" in error["message"]
    assert (content_type or "none") in error["message"] and error["param"] is None


async def _search_with(body: bytes, expect: int) -> dict[str, Any]:
    """POST `body` as JSON to /v1/search; the error it answers, once its status is `expect`."""
    headers = {**bearer("b" + uuid.uuid4().hex[:10]), "content-type": "application/json"}
    async with function_client("search") as api:
        response = await api.post("/v1/search", content=body, headers=headers)
    assert response.status_code == expect, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


@pytest.mark.parametrize(
    ("body", "where"),
    [(b'{"query": "sea",\n "limit": }', "line 2, column 11"), (b'{"query": "sea"', "line 1, column 16")],
)
async def test_a_body_that_is_not_json_is_a_400_saying_where_it_broke(body: bytes, where: str) -> None:
    error = await _search_with(body, expect=400)
    assert error["code"] == "bad_request" and "not valid JSON" in error["message"] and where in error["message"]
    assert error["param"] is None


@pytest.mark.parametrize(("body", "kind"), [(b"[1, 2]", "an array"), (b'"sea"', "a string"), (b"null", "null")])
async def test_a_json_body_that_is_not_an_object_is_a_422_saying_so(body: bytes, kind: str) -> None:
    error = await _search_with(body, expect=422)
    assert error["message"] == f"body: must be a JSON object, not {kind}" and error["param"] is None, error


async def test_one_id_twice_in_one_ingest_is_a_422_and_neither_is_stored() -> None:
    headers = bearer("b" + uuid.uuid4().hex[:10])
    twice = {"documents": [{"id": "faq", "text": "one"}, {"id": "other", "text": "x"}, {"id": "faq", "text": "two"}]}
    async with function_client("search") as api:
        response = await api.post("/v1/documents", json=twice, headers=headers)
        listed = await api.get("/v1/documents", headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "documents.2.id" and "documents.0.id" in error["message"], error
    assert listed.status_code == 200 and listed.json()["documents"] == [], listed.text  # nothing half-stored
