"""The stub providers speak the real wire formats: the official SDKs parse plain, multi-turn,
tool-call, structured and streamed answers, and see scripted failures and disconnects."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx2
import jsonschema
import openai
import pytest
from anthropic.types import MessageParam, TextBlockParam, ToolParam
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.conftest import LiveServer
from tests.llm_stub import StubProviders, minimal_instance

GPT = "gpt-4o"
CLAUDE = "claude-sonnet-5-5"
WEATHER = {"name": "get_weather", "arguments": {"city": "Paris"}}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3},
        "year": {"type": "integer", "minimum": 1900},
        "score": {"type": "number", "maximum": 1},
        "seen": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "kind": {"enum": ["film", "series"]},
        "note": {"type": ["string", "null"]},
        "director": {"$ref": "#/$defs/person"},
    },
    "required": ["title", "year", "score", "seen", "tags", "kind", "note", "director"],
    "additionalProperties": False,
    "$defs": {
        "person": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "born": {"type": "string", "format": "date"}},
            "required": ["name", "born"],
            "additionalProperties": False,
        }
    },
}


@pytest.fixture
def wire(stub_server: tuple[StubProviders, LiveServer]) -> Iterator[StubProviders]:
    stub, _ = stub_server
    stub.reset()
    yield stub
    stub.reset()


@pytest.fixture
async def oai(stub_server: tuple[StubProviders, LiveServer]) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{stub_server[1].url}/v1", api_key="sk-test", max_retries=0, timeout=5
    ) as client:
        yield client


@pytest.fixture
async def claude(stub_server: tuple[StubProviders, LiveServer]) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=stub_server[1].url, api_key="sk-test", max_retries=0, timeout=5
    ) as client:
        yield client


def weather_tool_openai() -> ChatCompletionToolParam:
    return {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }


def weather_tool_anthropic() -> ToolParam:
    return {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }


async def until(check: Any, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the stub never saw it"
        await asyncio.sleep(0.02)


# ---- plain and multi-turn ----------------------------------------------------------------------


async def test_a_single_prompt_keeps_the_existing_usage_numbers(
    wire: StubProviders, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    reply = await oai.chat.completions.create(
        model=GPT,
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hello there"}],
        max_tokens=50,
    )
    assert reply.choices[0].message.content == "openai says: Hello there"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == StubProviders.usage_for(
        "Be terse. Hello there", 50
    )
    msg = await claude.messages.create(
        model=CLAUDE, max_tokens=50, system="Be terse.", messages=[{"role": "user", "content": "Hello there"}]
    )
    assert msg.content[0].type == "text" and msg.content[0].text == "anthropic says: Hello there"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == StubProviders.usage_for("Be terse. Hello there", 50)


async def test_multi_turn_conversations_with_parts_and_tool_turns(
    wire: StubProviders, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    reply = await oai.chat.completions.create(model=GPT, messages=messages, max_tokens=40)
    assert reply.choices[0].message.content == "openai says: And tomorrow?"
    text = 'You are terse. Answer in English. What is here?  get_weather {"city":"Paris"} sunny And tomorrow?'
    assert reply.usage is not None and reply.usage.prompt_tokens == StubProviders.usage_for(text, 40)[0]

    system: list[TextBlockParam] = [
        {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Answer in English."},
    ]
    turns: list[MessageParam] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is here?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    msg = await claude.messages.create(model=CLAUDE, max_tokens=40, system=system, messages=turns)
    assert msg.content[0].type == "text" and msg.content[0].text == "anthropic says: sunny And tomorrow?"
    text = 'You are terse. Answer in English. What is here? get_weather {"city": "Paris"} sunny And tomorrow?'
    assert msg.usage.input_tokens == StubProviders.usage_for(text, 40)[0]
    assert [p for p, _ in wire.requests] == ["openai", "anthropic"]


# ---- tool calls --------------------------------------------------------------------------------


async def test_a_scripted_tool_call_is_parsed_by_each_sdk(
    wire: StubProviders, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    wire.script["openai"].append({"tool_call": WEATHER})
    reply = await oai.chat.completions.create(
        model=GPT, messages=[{"role": "user", "content": "Weather?"}], tools=[weather_tool_openai()]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].id.startswith("call_") and calls[0].type == "function"
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments) == {"city": "Paris"}

    wire.script["anthropic"].append({"tool_call": WEATHER})
    msg = await claude.messages.create(
        model=CLAUDE,
        max_tokens=64,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[weather_tool_anthropic()],
    )
    assert msg.stop_reason == "tool_use" and len(msg.content) == 1
    use = msg.content[0]
    assert use.type == "tool_use" and use.id.startswith("toolu_")
    assert use.name == "get_weather" and use.input == {"city": "Paris"}


# ---- streaming ---------------------------------------------------------------------------------


async def _settled(check: Any, seconds: float = 5.0) -> None:
    """The stub's counters change in its own thread just after the client has read everything."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the stub never counted it"
        await asyncio.sleep(0.01)


async def test_a_streamed_answer_equals_the_plain_one_and_reports_usage(
    wire: StubProviders, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    words = "tell me a longer story about seven small birds"
    wire.default["openai"] = wire.default["anthropic"] = {"content": words}
    plain = await oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "story"}], max_tokens=9)
    stream = await oai.chat.completions.create(
        model=GPT,
        messages=[{"role": "user", "content": "story"}],
        max_tokens=9,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) == len(words.split()) and "".join(pieces) == plain.choices[0].message.content == words
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    await _settled(lambda: wire.streams_completed["openai"] == 1)  # the server counts after its last write
    assert wire.chunks_sent["openai"] == len(chunks) + 1  # and [DONE]

    once = await claude.messages.create(model=CLAUDE, max_tokens=9, messages=[{"role": "user", "content": "story"}])
    async with claude.messages.stream(
        model=CLAUDE, max_tokens=9, messages=[{"role": "user", "content": "story"}]
    ) as events:
        texts = [t async for t in events.text_stream]
        final = await events.get_final_message()
    assert len(texts) == len(words.split()) and "".join(texts) == words
    assert final.content[0].type == once.content[0].type == "text"
    assert final.content[0].text == once.content[0].text == words
    assert final.stop_reason == once.stop_reason == "end_turn" and final.usage == once.usage
    await _settled(lambda: wire.streams_completed["anthropic"] == 1)


async def test_a_streamed_tool_call_is_assembled(
    wire: StubProviders, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    wire.script["openai"].append({"tool_call": {"name": "get_weather", "arguments": {"city": "Paris, France"}}})
    stream = await oai.chat.completions.create(
        model=GPT, messages=[{"role": "user", "content": "Weather?"}], tools=[weather_tool_openai()], stream=True
    )
    ids, names, arguments, finishes = [], [], [], []
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                assert call.index == 0
                ids += [call.id] if call.id else []
                names += [call.function.name] if call.function and call.function.name else []
                arguments.append(call.function.arguments or "" if call.function else "")
            finishes += [choice.finish_reason] if choice.finish_reason else []
    assert len(ids) == 1 and ids[0].startswith("call_") and names == ["get_weather"]
    assert sum(bool(a) for a in arguments) > 1 and json.loads("".join(arguments)) == {"city": "Paris, France"}
    assert finishes == ["tool_calls"]

    wire.script["anthropic"].append({"tool_call": {"name": "get_weather", "arguments": {"city": "Paris, France"}}})
    async with claude.messages.stream(
        model=CLAUDE,
        max_tokens=64,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[weather_tool_anthropic()],
    ) as events:
        kinds = [e.type async for e in events]
        final = await events.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "input_json" in kinds
    assert final.stop_reason == "tool_use" and final.content[0].type == "tool_use"
    assert final.content[0].name == "get_weather" and final.content[0].input == {"city": "Paris, France"}


# ---- structured output -------------------------------------------------------------------------


async def test_structured_answers_are_valid_for_the_schema(
    wire: StubProviders, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    reply = await oai.chat.completions.create(
        model=GPT,
        messages=[{"role": "user", "content": "A film?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "film", "schema": SCHEMA, "strict": True}},
    )
    answer = json.loads(reply.choices[0].message.content or "")
    jsonschema.validate(answer, SCHEMA)
    assert answer == minimal_instance(SCHEMA) and answer["director"]["born"] == "2024-01-01"
    loose = await oai.chat.completions.create(
        model=GPT, messages=[{"role": "user", "content": "JSON"}], response_format={"type": "json_object"}
    )
    assert json.loads(loose.choices[0].message.content or "") == {}

    msg = await claude.messages.create(
        model=CLAUDE,
        max_tokens=256,
        messages=[{"role": "user", "content": "A film?"}],
        tools=[weather_tool_anthropic(), {"name": "film", "description": "The answer.", "input_schema": SCHEMA}],
        tool_choice={"type": "tool", "name": "film"},
    )
    use = msg.content[0]
    assert use.type == "tool_use" and use.name == "film" and msg.stop_reason == "tool_use"
    jsonschema.validate(use.input, SCHEMA)

    exact = json.dumps({"title": "Alien", "year": 1979})  # scripted text: exactly what comes back
    wire.script["openai"].append({"content": exact})
    wire.script["anthropic"].append({"content": exact})
    reply = await oai.chat.completions.create(
        model=GPT,
        messages=[{"role": "user", "content": "A film?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "film", "schema": SCHEMA}},
    )
    assert reply.choices[0].message.content == exact
    msg = await claude.messages.create(
        model=CLAUDE,
        max_tokens=256,
        messages=[{"role": "user", "content": "A film?"}],
        tools=[{"name": "film", "input_schema": SCHEMA}],
        tool_choice={"type": "tool", "name": "film"},
    )
    assert msg.content[0].type == "tool_use" and msg.content[0].input == json.loads(exact)


# ---- failures and disconnects ------------------------------------------------------------------


async def test_a_status_answers_before_any_chunk(
    wire: StubProviders, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    wire.script["openai"].append({"status": 503})
    wire.script["anthropic"].append({"status": 529})
    with pytest.raises(openai.InternalServerError):
        await oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(anthropic.APIStatusError) as caught:
        await claude.messages.create(
            model=CLAUDE, max_tokens=9, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    assert caught.value.status_code == 529
    assert wire.streams.total() == 0 and wire.chunks_sent.total() == 0


async def test_a_stream_cut_after_the_first_tokens_raises_in_the_sdk(
    wire: StubProviders, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    wire.default["openai"] = wire.default["anthropic"] = {"content": "one two three four five", "fail_after_chunks": 3}
    stream = await oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "hi"}], stream=True)
    got: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            got += [chunk.choices[0].delta.content or ""]
    assert "".join(got) == "one two"  # the role chunk, then two words, then the cut
    assert wire.chunks_sent["openai"] == 3 and wire.streams_cut["openai"] == 1

    texts: list[str] = []
    with pytest.raises(httpx2.RemoteProtocolError):  # the anthropic SDK does not wrap errors mid-stream
        async with claude.messages.stream(
            model=CLAUDE, max_tokens=9, messages=[{"role": "user", "content": "hi"}]
        ) as events:
            async for text in events.text_stream:
                texts.append(text)
    assert texts == ["one"]  # message_start, content_block_start, one delta, then the cut
    assert wire.chunks_sent["anthropic"] == 3 and wire.streams_cut["anthropic"] == 1


async def test_a_stream_can_end_with_the_providers_error_event(
    wire: StubProviders, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    wire.default["openai"] = wire.default["anthropic"] = {"fail_after_chunks": 2, "fail_with": "error"}
    stream = await oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(openai.APIError, match="stub stream failure"):
        async for _ in stream:
            pass
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        async with claude.messages.stream(
            model=CLAUDE, max_tokens=9, messages=[{"role": "user", "content": "hi"}]
        ) as events:
            async for _ in events:
                pass
    assert wire.streams_cut == {"openai": 1, "anthropic": 1}


async def test_a_client_that_goes_away_mid_stream_is_counted(
    wire: StubProviders, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    many = " ".join(f"w{i}" for i in range(60))
    wire.default["openai"] = wire.default["anthropic"] = {"content": many, "stream_delay": 0.05}
    stream = await oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "hi"}], stream=True)
    async for chunk in stream:
        if chunk.choices[0].delta.content:
            break
    await stream.close()
    await until(lambda: wire.streams_cancelled["openai"] == 1)
    assert wire.chunks_sent["openai"] < 10 and wire.streams_completed["openai"] == 0

    async with claude.messages.stream(
        model=CLAUDE, max_tokens=9, messages=[{"role": "user", "content": "hi"}]
    ) as events:
        async for _ in events.text_stream:
            break
    await until(lambda: wire.streams_cancelled["anthropic"] == 1)
    assert wire.chunks_sent["anthropic"] < 10 and wire.streams_completed["anthropic"] == 0
