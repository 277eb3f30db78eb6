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


def client(api: LiveServer, tenant_id: str, **kwargs: Any) -> Any:
    """The official SDK client (typed Any here: its request types are TypedDicts this file
    builds as plain dicts)."""
    kwargs.setdefault("timeout", 60)  # a hung request fails its test, not the whole run
    kwargs.setdefault("api_key", issue_token(tenant_id))
    return openai.AsyncOpenAI(base_url=f"{api.url}/v1", max_retries=0, **kwargs)


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
    assert first.parse().usage.total_tokens == 0


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
            await sdk.chat.completions.create(model="default", messages=messages)
        assert stub.calls["openai"] == 2
        for _ in range(2):
            await sdk.chat.completions.create(
                model="default",
                messages=messages,
                extra_headers={"x-agent-patterns-cache": "on"},
            )
        assert stub.calls["openai"] == 3
        for _ in range(2):
            await sdk.chat.completions.create(model="default", messages=messages, seed=7)
        assert stub.calls["openai"] == 4
    assert json.loads(json.dumps(stub.requests[-1][1]))["seed"] == 7


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


async def _tool_round_trip(sdk: Any, stub: StubProviders) -> tuple[Any, Any]:
    """Ask, get a tool call, answer it, get the final text."""
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = await sdk.chat.completions.create(model="default", messages=messages, tools=[WEATHER], temperature=0)
    call = first.choices[0].message.tool_calls[0]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
    ]
    second = await sdk.chat.completions.create(model="default", messages=messages, tools=[WEATHER], temperature=0)
    return first, second


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_tool_call_round_trip_has_one_shape_on_either_provider(
    llm_api: LiveServer, stub: StubProviders, provider: str
) -> None:
    if provider == "anthropic":
        stub.default["openai"] = {"status": 503}  # OpenAI is down: every call falls back
    stub.script[provider].append({"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}})
    stub.script[provider].append({"content": "It is 21 degrees in Paris."})
    async with client(llm_api, tenant()) as sdk:
        first, second = await _tool_round_trip(sdk, stub)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.type == "function"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert second.choices[0].message.content == "It is 21 degrees in Paris."
    body = [b for p, b in stub.requests if p == provider][-1]
    if provider == "anthropic":  # the tool result went back as Anthropic expects it
        assert body["messages"][-1]["content"][0] == {
            "type": "tool_result",
            "tool_use_id": call.id,
            "content": '{"temp_c": 21}',
        }
        assert body["tools"][0]["input_schema"]["required"] == ["city"]
    else:
        assert body["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}


async def test_a_conversation_that_used_tools_on_openai_continues_on_anthropic(
    llm_api: LiveServer, stub: StubProviders
) -> None:
    stub.script["openai"].append({"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}})
    stub.script["openai"].extend([{"status": 503}] * 5)  # then OpenAI fails: the second turn falls back
    stub.script["anthropic"].append({"content": "Cold in Oslo."})
    async with client(llm_api, tenant(), timeout=20) as sdk:
        first, second = await _tool_round_trip(sdk, stub)
    assert first.model == "gpt-4o" and second.model == "claude-sonnet-5-5"
    assert second.choices[0].message.content == "Cold in Oslo."
    sent = [b for p, b in stub.requests if p == "anthropic"][-1]
    call_id = first.choices[0].message.tool_calls[0].id
    assert sent["messages"][1]["content"][-1] == {
        "type": "tool_use",
        "id": call_id,
        "name": "get_weather",
        "input": {"city": "Oslo"},
    }


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
RESPONSE_FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_json_schema_output_is_valid_on_either_provider(
    llm_api: LiveServer, stub: StubProviders, provider: str
) -> None:
    if provider == "anthropic":
        stub.default["openai"] = {"status": 503}
    async with client(llm_api, tenant()) as sdk:
        reply = await sdk.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "Invent a person."}],
            response_format=RESPONSE_FORMAT,
            temperature=0,
        )
    value = json.loads(reply.choices[0].message.content or "")
    assert set(value) == {"name", "age"} and isinstance(value["age"], int)
    if provider == "anthropic":  # enforced with a forced tool, not a looser prompt
        body = [b for p, b in stub.requests if p == "anthropic"][-1]
        assert body["tool_choice"] == {"type": "tool", "name": "person"}


async def test_a_fallback_answer_that_breaks_the_schema_is_an_error_not_a_looser_answer(
    llm_api: LiveServer, stub: StubProviders
) -> None:
    stub.default["openai"] = {"status": 503}
    stub.script["anthropic"].append({"content": '{"name": "Ada"}'})  # no age: invalid
    async with client(llm_api, tenant()) as sdk:
        with pytest.raises(openai.UnprocessableEntityError, match="does not match the response schema"):
            await sdk.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "Invent a person."}],
                response_format=RESPONSE_FORMAT,
                temperature=0,
            )


async def ledger_rows(tenant_id: str) -> list[tuple[str, int, int, bool]]:
    from agent_patterns.backends import connection

    async with connection() as db:
        cur = await db.execute(
            "SELECT provider, input_tokens + cached_input_tokens + cache_write_tokens, output_tokens, cache_hit"
            " FROM agent_patterns.llm_usage WHERE tenant_id = %s ORDER BY id",
            (tenant_id,),
        )
        return [(str(r[0]), int(r[1]), int(r[2]), bool(r[3])) for r in await cur.fetchall()]


async def reserved(tenant_id: str) -> int:
    from agent_patterns.llm import budget

    return (await budget.usage(tenant_id)).reserved


ASK: Any = [{"role": "user", "content": "Tell me about the sea in a few words."}]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_streamed_answer_equals_the_plain_one_and_carries_usage(
    llm_api: LiveServer, stub: StubProviders, provider: str
) -> None:
    if provider == "anthropic":
        stub.default["openai"] = {"status": 503}  # falls back before the first token
    stub.default[provider] = {**stub.default[provider], "content": "The sea is wide and deep and blue."}
    t = tenant()
    async with client(llm_api, t) as sdk:
        plain = await sdk.chat.completions.create(model="default", messages=ASK, temperature=0.5)
        stream = await sdk.chat.completions.create(
            model="default",
            messages=ASK,
            temperature=0.5,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage, chunks = await _collect(stream)
    assert text == plain.choices[0].message.content == "The sea is wide and deep and blue."
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # tokens, not one blob
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-1].choices == []
    assert usage is not None and plain.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (plain.usage.prompt_tokens, plain.usage.completion_tokens)
    rows = [r for r in await ledger_rows(t) if not r[3]]
    assert len(rows) == 2 and rows[0][1:] == rows[1][1:] and rows[1][0] == provider  # in the ledger like any call
    assert await reserved(t) == 0


async def _collect(stream: Any) -> tuple[str, Any, list[Any]]:
    text, usage, chunks = "", None, []
    async for c in stream:
        chunks.append(c)
        if c.usage is not None:
            usage = c.usage
        for choice in c.choices:
            text += choice.delta.content or ""
    return text, usage, chunks


async def test_a_failure_after_the_first_token_ends_the_stream_with_an_error_and_is_still_counted(
    llm_api: LiveServer, stub: StubProviders
) -> None:
    stub.script["openai"].append({"content": "one two three four five six seven", "fail_after_chunks": 4})
    t = tenant()
    async with client(llm_api, t) as sdk:
        stream = await sdk.chat.completions.create(model="default", messages=ASK, stream=True)
        seen = ""
        with pytest.raises(openai.APIError, match="stream failed"):
            async for c in stream:
                for choice in c.choices:
                    seen += choice.delta.content or ""
    assert seen  # tokens came before the failure: no fallback after them
    assert stub.calls["anthropic"] == 0
    rows = await ledger_rows(t)
    assert len(rows) == 1 and rows[0][1] > 0 and rows[0][2] >= 1  # settled conservatively, never 0
    assert await reserved(t) == 0


async def test_a_client_that_hangs_up_cancels_upstream_and_pays_what_was_generated(
    llm_api: LiveServer, stub: StubProviders
) -> None:
    import asyncio

    stub.script["openai"].append({"content": " ".join(["word"] * 60), "stream_delay": 0.1})
    t = tenant()
    async with client(llm_api, t) as sdk:
        stream = await sdk.chat.completions.create(model="default", messages=ASK, stream=True)
        got = 0
        async for _ in stream:
            got += 1
            if got == 4:
                break
        await stream.close()
    for _ in range(100):  # the gateway notices the hang-up, cancels upstream, settles
        if stub.streams_cancelled["openai"] == 1 and await ledger_rows(t):
            break
        await asyncio.sleep(0.05)
    assert stub.streams_cancelled["openai"] == 1 and stub.streams_completed["openai"] == 0
    rows = await ledger_rows(t)
    assert len(rows) == 1 and rows[0][1] > 0 and 1 <= rows[0][2] < 60 * 5
    assert await reserved(t) == 0


async def test_a_client_gone_before_the_first_token_still_cancels_upstream_and_pays(
    llm_api: LiveServer, stub: StubProviders
) -> None:
    """The client gives up while the provider is slow to its first token. By then the gateway
    has reserved and is opening the upstream stream; when the response finds the client gone,
    upstream is cancelled and the call is paid conservatively (never 0), not left to the lease."""
    import asyncio

    stub.script["openai"].append({"delay": 0.7, "content": " ".join(["word"] * 60), "stream_delay": 0.1})
    t = tenant()
    async with client(llm_api, t, timeout=0.3) as sdk:
        with pytest.raises(openai.APITimeoutError):
            await sdk.chat.completions.create(model="default", messages=ASK, stream=True)
    for _ in range(100):  # the provider answers at 0.7 s; the gateway then finds the client gone
        if stub.streams_cancelled["openai"] == 1 and await ledger_rows(t):
            break
        await asyncio.sleep(0.05)
    assert stub.streams_cancelled["openai"] == 1 and stub.streams_completed["openai"] == 0
    rows = await ledger_rows(t)
    assert len(rows) == 1 and rows[0][1] > 0 and rows[0][2] >= 1
    assert await reserved(t) == 0


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_stream_that_ends_early_is_an_error_and_never_cached(
    llm_api: LiveServer, stub: StubProviders, provider: str
) -> None:
    """A body that ends cleanly before the answer's end (no finish, no `[DONE]`/`message_stop`: a
    proxy that gave up) is not a complete answer: the client gets an error chunk, the usage is
    counted conservatively, and the cache does not keep the truncated text."""
    if provider == "anthropic":
        stub.default["openai"] = {"status": 503}  # OpenAI down: Anthropic answers the stream
    cut = {"content": "one two three four five six seven", "fail_after_chunks": 4, "fail_with": "eof"}
    stub.script[provider].append(cut)
    t = tenant()
    async with client(llm_api, t) as sdk:
        stream = await sdk.chat.completions.create(model="default", messages=ASK, temperature=0, stream=True)
        seen = ""
        with pytest.raises(openai.APIError, match="before the answer's end"):
            async for c in stream:
                for choice in c.choices:
                    seen += choice.delta.content or ""
        assert seen and stub.streams_cut[provider] == 1
        again = await sdk.chat.completions.with_raw_response.create(
            model="default", messages=ASK, temperature=0, stream=True
        )
        text, _, _ = await _collect(again.parse())
    assert again.headers["x-agent-patterns-cache"] == "miss"  # the cut answer was not cached
    assert text.startswith(f"{provider} says:") and text != seen
    rows = [r for r in await ledger_rows(t) if not r[3]]
    assert len(rows) == 2 and all(r[2] >= 1 for r in rows)
    assert await reserved(t) == 0


async def test_streams_reuse_the_connection_to_the_provider(llm_api: LiveServer, stub: StubProviders) -> None:
    """Each stream's body is read to its end after `[DONE]`, so the next one rides the same pooled
    connection instead of paying a new TCP (and, against a real provider, TLS) handshake."""
    t = tenant()
    async with client(llm_api, t) as sdk:
        for _ in range(3):
            stream = await sdk.chat.completions.create(model="default", messages=ASK, temperature=0.7, stream=True)
            await _collect(stream)
    assert stub.calls["openai"] == 3
    assert len(stub.connections["openai"]) == 1, stub.connections


async def test_a_cached_answer_is_replayed_as_a_stream(llm_api: LiveServer, stub: StubProviders) -> None:
    t = tenant()
    async with client(llm_api, t) as sdk:
        first = await sdk.chat.completions.with_raw_response.create(
            model="default",
            messages=ASK,
            temperature=0,
            stream=True,
        )
        text1, _, _ = await _collect(first.parse())
        second = await sdk.chat.completions.with_raw_response.create(
            model="default",
            messages=ASK,
            temperature=0,
            stream=True,
        )
        text2, _, chunks = await _collect(second.parse())
    assert first.headers["x-agent-patterns-cache"] == "miss" and second.headers["x-agent-patterns-cache"] == "hit"
    assert text1 == text2 and stub.calls["openai"] == 1
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_streamed_tool_call_assembles_to_the_same_call(
    llm_api: LiveServer, stub: StubProviders, provider: str
) -> None:
    if provider == "anthropic":
        stub.default["openai"] = {"status": 503}
    stub.script[provider].append({"tool_call": {"name": "get_weather", "arguments": {"city": "Rome"}}})
    async with client(llm_api, tenant()) as sdk:
        stream = await sdk.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "Weather in Rome?"}],
            tools=[WEATHER],
            stream=True,
        )
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for c in stream:
            for choice in c.choices:
                finish = choice.finish_reason or finish
                for d in choice.delta.tool_calls or []:
                    slot = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                    slot["id"] += d.id or ""
                    slot["name"] += (d.function.name if d.function else None) or ""
                    slot["arguments"] += (d.function.arguments if d.function else None) or ""
    assert finish == "tool_calls" and len(calls) == 1
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Rome"}
    assert calls[0]["id"]


async def test_behind_a_function_url_the_bearer_jwt_is_checked_against_the_identity_provider(
    llm_api: LiveServer, stub: StubProviders, identity_provider: Any
) -> None:
    """LlmStreamFunction has no API Gateway authorizer in front: the app verifies the JWT."""
    idp = client(llm_api, "acme", api_key=identity_provider("acme"))
    forged = client(llm_api, "acme")
    async with idp, forged:
        stream = await idp.chat.completions.create(model="default", messages=ASK, stream=True)
        text, _, _ = await _collect(stream)
        assert text
        with pytest.raises(openai.AuthenticationError):  # a locally signed token is no identity on AWS
            await forged.chat.completions.create(model="default", messages=ASK)


def record_threads(monkeypatch: pytest.MonkeyPatch, obj: Any, method: str) -> list[int]:
    """The threads `obj.method` (a coroutine method) is run in, from now on."""
    import threading

    ran_in: list[int] = []
    original = getattr(obj, method)

    async def recording() -> None:
        ran_in.append(threading.get_ident())
        await original()

    monkeypatch.setattr(obj, method, recording)
    return ran_in


async def test_resetting_the_provider_clients_closes_them_on_the_gateway_loop(
    llm_api: LiveServer, stub: StubProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `stub` fixture (and a SnapStart restore) resets the provider clients. One dropped
    unclosed was closed later by the SDK's finalizer, on the loop of whatever thread collected
    it (this test's), after the collector had closed its sockets: that close unregistered the
    gateway connection that had reused one of the file descriptors, so its request was never read
    (the identity-provider test above hung that way in CI)."""
    import asyncio

    from agent_patterns.llm import providers

    async with client(llm_api, tenant()) as sdk:
        await sdk.chat.completions.create(model="default", messages=ASK)
    [(loop, made)] = list(providers._clients.items())  # the gateway's, in the server's thread
    old = made["openai"]
    closed_in = record_threads(monkeypatch, old, "close")
    providers.reset_clients()
    for _ in range(100):
        if old.is_closed():
            break
        await asyncio.sleep(0.02)
    assert old.is_closed() and closed_in == [llm_api.thread.ident]
    assert loop not in providers._clients


async def test_resetting_redis_closes_each_client_on_the_loop_that_owns_it(
    llm_api: LiveServer, stub: StubProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same hazard as the provider clients: a Redis client dropped unclosed is closed by
    redis-py's finalizer on whatever thread collects it. A reset (SnapStart restore, tests)
    closes each on its own loop, and the gateway goes on with a new one."""
    import asyncio

    from agent_patterns.backends import redis as backend

    async with client(llm_api, tenant()) as sdk:
        await sdk.chat.completions.create(model="default", messages=ASK)
    [(loop, old)] = [
        (lp, c) for lp, c in backend._clients.items() if getattr(lp, "_thread_id", None) == llm_api.thread.ident
    ]
    closed_in = record_threads(monkeypatch, old, "aclose")
    backend.reset_redis()
    for _ in range(100):
        if closed_in:
            break
        await asyncio.sleep(0.02)
    assert closed_in == [llm_api.thread.ident]
    async with client(llm_api, tenant()) as sdk:  # the gateway made itself a new client
        assert (await sdk.chat.completions.create(model="default", messages=ASK)).choices[0].message.content
    assert backend._clients.get(loop) not in (None, old)


async def test_long_stable_prefixes_get_anthropic_cache_breakpoints_and_cache_tokens_are_priced(
    llm_api: LiveServer, stub: StubProviders, settings_env: pytest.MonkeyPatch
) -> None:
    from agent_patterns.config import reset_settings
    from agent_patterns.llm.pricing import cost_usd

    settings_env.setenv("LLM_AUTO_PROMPT_CACHE", "true")
    settings_env.setenv("LLM_AUTO_PROMPT_CACHE_MIN_CHARS", "200")
    reset_settings()
    stub.default["openai"] = {"status": 503}
    stub.default["anthropic"] = {"ok": {"cache_read": 300, "cache_write": 40}}
    long_system = "You are a careful assistant. " * 20
    async with client(llm_api, tenant()) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="default",
            messages=[{"role": "system", "content": long_system}, {"role": "user", "content": "hi"}],
            tools=[WEATHER],
            temperature=0,
        )
        await sdk.chat.completions.create(model="default", messages=ASK, temperature=0)
    body = [b for p, b in stub.requests if p == "anthropic"]
    assert body[0]["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in body[0]["tools"][-1]  # one short tool: below the threshold
    assert all("cache_control" not in block for block in body[1].get("system", []))
    reply = raw.parse()
    assert reply.usage.prompt_tokens_details.cached_tokens == 300
    expected = cost_usd(
        "claude-sonnet-5-5",
        input_tokens=reply.usage.prompt_tokens - 340,
        output_tokens=reply.usage.completion_tokens,
        cached_input_tokens=300,
        cache_write_tokens=40,
    )
    assert abs(float(raw.headers["x-agent-patterns-cost-usd"]) - expected) < 1e-9


async def test_image_parts_reach_anthropic_as_image_blocks(llm_api: LiveServer, stub: StubProviders) -> None:
    stub.default["openai"] = {"status": 503}
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    async with client(llm_api, tenant()) as sdk:
        reply = await sdk.chat.completions.create(
            model="default", messages=[{"role": "user", "content": content}], temperature=0
        )
    assert reply.choices[0].message.content
    blocks = [b for p, b in stub.requests if p == "anthropic"][-1]["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": pixel}}
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
