"""POST /v1/chat/completions and GET /v1/models with the official `openai` SDK as the client,
against the llm function served over HTTP, and the stub providers behind the real SDKs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from agent_patterns.tenancy import issue_token
from agent_patterns_dev.gateway import load_function
from tests.conftest import LiveServer
from tests.llm_stub import StubProviders


@pytest.fixture(scope="module")
def llm_api() -> Iterator[LiveServer]:
    with LiveServer(load_function("llm").app) as live:
        yield live


def tenant() -> str:
    return "k" + uuid.uuid4().hex[:10]


def client(api: LiveServer, tenant_id: str, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{api.url}/v1", api_key=issue_token(tenant_id), max_retries=0, **kwargs)


async def test_the_openai_sdk_holds_a_conversation_through_the_gateway(
    llm_api: LiveServer, stub: StubProviders
) -> None:
    t = tenant()
    async with client(llm_api, t) as sdk:
        reply = await sdk.chat.completions.create(
            model="default",
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "Another one?"},
            ],
            max_tokens=50,
            temperature=0,
        )
        assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
        assert reply.model == "gpt-4o" and reply.usage is not None and reply.usage.total_tokens > 0
        sent = stub.requests[-1][1]
        assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
        again = await sdk.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": "Name a colour."}], temperature=0
        )
        first = await sdk.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": "Name a colour."}], temperature=0
        )
    assert again.headers["x-agent-patterns-cache"] == "miss" and first.headers["x-agent-patterns-cache"] == "hit"
    assert first.parse().usage.total_tokens == 0  # type: ignore[union-attr]


async def test_models_lists_aliases_and_priced_models(llm_api: LiveServer, stub: StubProviders) -> None:
    async with client(llm_api, tenant()) as sdk:
        ids = [m.id async for m in sdk.models.list()]
    assert {"default", "fast", "gpt-4o", "claude-sonnet-5-5"} <= set(ids)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"max_token": 10}, "max_token"),  # a typo is not silently the default
        ({"logprobs": True}, "logprobs"),  # OpenAI's, not supported here: refused by name
        ({"n": 2}, "n:"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"model": "gpt-9"}, "unknown model"),
        ({"tool_choice": "required"}, "tool_choice needs tools"),
        ({"max_tokens": 10**6}, "max_tokens"),
    ],
)
async def test_unknown_or_unsupported_fields_are_a_422_naming_them(
    llm_api: LiveServer, stub: StubProviders, extra: dict[str, Any], needle: str
) -> None:
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}], **extra}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{llm_api.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {issue_token(tenant())}"},
        )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"
    assert stub.calls.total() == 0
    rest = {k: v for k, v in extra.items() if k != "model"}
    async with client(llm_api, tenant()) as sdk:  # the SDK raises its own typed error for it
        with pytest.raises(openai.UnprocessableEntityError):
            await sdk.chat.completions.create(model=body["model"], messages=body["messages"], extra_body=rest)


async def test_sampled_answers_are_not_cached_unless_asked(llm_api: LiveServer, stub: StubProviders) -> None:
    t = tenant()
    messages = [{"role": "user", "content": f"a poem {uuid.uuid4()}"}]
    async with client(llm_api, t) as sdk:
        for _ in range(2):  # temperature defaults to 1: each call is a new sample
            await sdk.chat.completions.create(model="default", messages=messages)  # type: ignore[arg-type]
        assert stub.calls["openai"] == 2
        for _ in range(2):
            await sdk.chat.completions.create(
                model="default",
                messages=messages,  # type: ignore[arg-type]
                extra_headers={"x-agent-patterns-cache": "on"},
            )
        assert stub.calls["openai"] == 3
        for _ in range(2):
            await sdk.chat.completions.create(model="default", messages=messages, seed=7)  # type: ignore[arg-type]
        assert stub.calls["openai"] == 4
    assert json.loads(json.dumps(stub.requests[-1][1]))["seed"] == 7
