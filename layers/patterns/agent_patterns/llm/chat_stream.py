"""Streamed chat answers in OpenAI's chunk format, on the same spend control as every call.

The provider's stream is opened, and its first event read, before the response starts: a
failure up to then falls back to the next provider and maps to a proper HTTP status. After the
first token nothing falls back; a failure ends the stream with an error chunk. The reservation
is made before the stream and settled when it ends, however it ends: the provider's reported
usage when it came, otherwise (client gone, provider cut) a conservative count, never 0 — the
input bound reserved and one token per byte generated. A client that goes away cancels the
upstream request. Complete answers are cached like any other; a cache hit is replayed as a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import StreamingResponse

from agent_patterns.errors import AgentPatternsError
from agent_patterns.llm import cache, providers, translate
from agent_patterns.llm.call import close_reservation, open_reservation, release_reservation
from agent_patterns.llm.chat import ChatAnswer, ChatRequest, FinishReason, Usage
from agent_patterns.llm.chat_call import CacheMode, _cached_value, begin
from agent_patterns.llm.openai_wire import DONE, chunk, completion_id, error_chunk, usage_chunk
from agent_patterns.observability import logger

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
Event = tuple[str, Any]  # ("delta", {...}) | ("finish", reason) | ("usage", Usage)


@dataclass
class _Answer:
    """What has streamed so far: for the cache, the settlement and structured-output checks."""

    content: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish: FinishReason | None = None
    usage: Usage | None = None
    input_seen: int | None = None  # input tokens a provider reported before the end

    def add(self, delta: dict[str, Any]) -> None:
        if delta.get("content"):
            self.content.append(delta["content"])
        for call in delta.get("tool_calls", ()):
            slot = self.tool_calls.setdefault(
                call["index"], {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            slot["id"] = call.get("id") or slot["id"]
            fn = call.get("function") or {}
            slot["function"]["name"] += fn.get("name") or ""
            slot["function"]["arguments"] += fn.get("arguments") or ""

    def generated_bytes(self) -> int:
        text = "".join(self.content) + "".join(c["function"]["arguments"] for c in self.tool_calls.values())
        return len(text.encode())

    def answer(self, provider: str, model: str) -> ChatAnswer:
        calls = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        usage = self.usage or Usage(0, 0)
        return ChatAnswer("".join(self.content) or None, calls, self.finish or "stop", usage, provider, model)


# ---- provider streams in neutral events ---------------------------------------------------
# The provider's Server-Sent Events are read as lines and parsed with json.loads: no SDK model
# per chunk (see providers.post).


class UpstreamStreamError(Exception):
    """The provider reported an error inside its stream (a 5xx in spirit: retried or fallen back
    from before the first token, an error chunk after it)."""

    status_code = 502


async def _sse_data(response: Any) -> AsyncIterator[dict[str, Any]]:
    """The JSON payloads of a provider's SSE stream, until `[DONE]` or the end. The body is read
    to its end after `[DONE]`: a response closed unread loses its pooled connection."""
    done = False
    async for line in response.aiter_lines():
        if done or not line.startswith("data:"):
            continue  # `event:` names repeat the payload's `type`; blank lines, comments, pings
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
        elif data:
            payload = json.loads(data)
            if isinstance(payload, dict) and payload.get("error") and payload.get("type") in (None, "error"):
                error = payload["error"]
                raise UpstreamStreamError(str(error.get("message") if isinstance(error, dict) else error))
            yield payload


async def _openai_events(response: Any) -> AsyncIterator[Event]:
    async for c in _sse_data(response):
        if c.get("usage"):
            yield ("usage", translate.openai_usage(c["usage"]))
        for choice in c.get("choices") or ():
            d = choice.get("delta") or {}
            delta: dict[str, Any] = {}
            if d.get("content"):
                delta["content"] = d["content"]
            if d.get("tool_calls"):
                calls = []
                for t in d["tool_calls"]:
                    call: dict[str, Any] = {"index": t["index"]}
                    if t.get("id"):
                        call.update(id=t["id"], type="function")
                    fn = t.get("function")
                    if fn is not None:
                        call["function"] = {k: fn[k] for k in ("name", "arguments") if fn.get(k)}
                    calls.append(call)
                delta["tool_calls"] = calls
            if delta:
                yield ("delta", delta)
            if choice.get("finish_reason"):
                yield ("finish", translate.OPENAI_FINISH.get(choice["finish_reason"], "stop"))


async def _anthropic_events(response: Any, req: ChatRequest, box: _Answer) -> AsyncIterator[Event]:
    forced = translate.forced_tool(req)
    tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
    json_block: int | None = None
    started: dict[str, Any] = {}
    async for ev in _sse_data(response):
        kind = ev.get("type")
        if kind == "message_start":
            started = (ev.get("message") or {}).get("usage") or {}
            seen = translate.anthropic_usage(started, 0)
            box.input_seen = seen.input_tokens + seen.cached_input_tokens + seen.cache_write_tokens
        elif kind == "content_block_start" and ev["content_block"].get("type") == "tool_use":
            block = ev["content_block"]
            if forced and block.get("name") == forced:
                json_block = ev["index"]  # the structured answer: streamed as content
            else:
                tools[ev["index"]] = len(tools)
                call = {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": ""}}
                yield ("delta", {"tool_calls": [{"index": tools[ev["index"]], **call}]})
        elif kind == "content_block_delta":
            d = ev.get("delta") or {}
            if d.get("type") == "text_delta" and d.get("text"):
                yield ("delta", {"content": d["text"]})
            elif d.get("type") == "input_json_delta" and d.get("partial_json"):
                if ev["index"] == json_block:
                    yield ("delta", {"content": d["partial_json"]})
                elif ev["index"] in tools:
                    args = {"index": tools[ev["index"]], "function": {"arguments": d["partial_json"]}}
                    yield ("delta", {"tool_calls": [args]})
        elif kind == "message_delta":
            output = int((ev.get("usage") or {}).get("output_tokens") or 0)
            yield ("finish", translate.anthropic_finish((ev.get("delta") or {}).get("stop_reason"), req))
            yield ("usage", translate.anthropic_usage(started, output))


@dataclass
class _Open:
    events: AsyncIterator[Event]
    first: list[Event]
    response: Any  # the provider's HTTP response, closed to cancel the upstream request
    provider: str
    model: str


async def _open(route: Any, req: ChatRequest, max_tokens: int, box: _Answer) -> tuple[_Open, bool]:
    """The first provider that answers with a first event; fallback happens only here."""

    async def attempt(provider: str, model: str, attempt_s: float) -> _Open:
        events: AsyncIterator[Event]
        if provider == "openai":
            body = translate.openai_kwargs(req, model, max_tokens)
            body.update(stream=True, stream_options={"include_usage": True})
            response = await providers.post(provider, body, attempt_s, stream=True)
            events = _openai_events(response)
        else:
            body = {**translate.anthropic_kwargs(req, model, max_tokens), "stream": True}
            response = await providers.post(provider, body, attempt_s, stream=True)
            events = _anthropic_events(response, req, box)
        opened.append(response)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            with contextlib.suppress(Exception):
                await response.aclose()
            raise UpstreamStreamError(f"{provider} ended its stream before its first event") from None
        except BaseException:
            with contextlib.suppress(Exception):
                await response.aclose()
            raise
        return _Open(events, [first], response, provider, model)

    opened: list[Any] = []
    try:
        return await providers.run_chain(route, attempt)
    except BaseException:  # also cancelled after an attempt succeeded: nothing stays open
        for response in opened:
            with contextlib.suppress(Exception):
                await response.aclose()
        raise


Trailer = Callable[[str], str]  # the answer's text -> one more SSE event, sent before [DONE]


async def stream_chat(
    req: ChatRequest,
    tenant_id: str,
    *,
    daily_budget: int | None = None,
    cache_mode: CacheMode = "auto",
    trailer: Trailer | None = None,
) -> StreamingResponse:
    """A StreamingResponse of the answer in OpenAI's chunk format (or an error before it starts)."""

    started = time.perf_counter()
    p, value, held = await begin(req, tenant_id, cache_mode, started)
    route, max_tokens, key = p.route, p.max_tokens, p.cache_key
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    if value is not None:
        headers = {**SSE_HEADERS, "x-agent-patterns-cache": "hit", "x-agent-patterns-provider": value["provider"]}
        replay = _replay(value, include_usage, trailer)
        return StreamingResponse(replay, media_type="text/event-stream", headers=headers)
    try:
        input_bytes = req.size_bytes()
        reservation = await open_reservation(tenant_id, p.models, input_bytes, max_tokens, daily_budget)
        box = _Answer()
        try:
            opened, fell_back = await _open(route, req, max_tokens, box)
        except BaseException:
            await release_reservation(reservation)
            raise
    except BaseException:
        if key is not None:
            await cache.unlock(held)
        raise

    finished = False

    async def finish(complete: bool) -> None:
        """Ledger and settle once, however the stream ends; shielded so a hang-up still settles."""
        nonlocal finished
        if finished:
            return
        finished = True
        cache_key = key if complete else None
        args = (tenant_id, reservation, opened, box, input_bytes, max_tokens, started, fell_back, cache_key, held)
        await asyncio.shield(asyncio.ensure_future(_finish(*args)))

    async def settle(complete: bool) -> None:
        """Ledger and settle before the client sees the end (an answer or an error chunk); what
        was sent stands, so a bookkeeping failure here is logged, not sent."""
        try:
            await finish(complete)
        except Exception:
            logger.exception("chat stream: ledger, settlement or cache write failed at the stream's end")

    async def body() -> AsyncIterator[str]:
        cid, created = completion_id(), int(time.time())
        try:
            yield chunk(cid, opened.model, created, {"role": "assistant", "content": ""})
            for ev in opened.first:
                out = _apply(ev, box, cid, opened.model, created)
                if out:
                    yield out
            async for ev in opened.events:
                out = _apply(ev, box, cid, opened.model, created)
                if out:
                    yield out
            if box.finish is None:  # cut short: never sent (or cached) as a complete answer
                raise UpstreamStreamError(f"{opened.provider} ended its stream before the answer's end")
            _check_structured(req, box, opened.provider)
            yield chunk(cid, opened.model, created, {}, box.finish)
            if include_usage and box.usage is not None:
                yield usage_chunk(cid, opened.model, created, box.usage)
            await settle(complete=True)
            if trailer is not None:
                yield trailer("".join(box.content))
            yield DONE
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # after the first token: the status is sent, so the stream says it
            if isinstance(exc, AgentPatternsError):
                message = exc.message
            elif isinstance(exc, UpstreamStreamError):  # ours, or the provider's own words
                message = f"{opened.provider} stream failed: {exc}"
            else:
                message = f"{opened.provider} stream failed"
            code = exc.code if isinstance(exc, AgentPatternsError) else "provider_stream_failed"
            logger.warning("chat stream failed after the first token", extra={"error": repr(exc)})
            await settle(complete=False)
            yield error_chunk(message, code)
            yield DONE
        finally:
            await finish(complete=False)

    headers = {**SSE_HEADERS, "x-agent-patterns-cache": "miss", "x-agent-patterns-provider": opened.provider}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


def _apply(ev: Event, box: _Answer, cid: str, model: str, created: int) -> str | None:
    kind, value = ev
    if kind == "delta":
        box.add(value)
        return chunk(cid, model, created, value)
    if kind == "finish":
        box.finish = value
    elif kind == "usage":
        box.usage = value
    return None


def _check_structured(req: ChatRequest, box: _Answer, provider: str) -> None:
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return
    text = "".join(box.content)
    if fmt.type == "json_object":
        translate.check_json_object(text, provider)
        return
    assert fmt.json_schema is not None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        translate.check_json_object(text, provider)  # raises the clear error
        return
    translate.check_schema(value, fmt.json_schema.schema_, provider)


async def _finish(
    tenant_id: str,
    reservation: Any,
    opened: _Open,
    box: _Answer,
    input_bytes: int,
    max_tokens: int,
    started: float,
    fell_back: bool,
    cache_key: str | None,
    held: Any,
) -> None:
    """Cancel upstream if it is still running, then ledger and settle; cache a complete answer."""
    try:
        with contextlib.suppress(Exception):
            await opened.response.aclose()
        usage = box.usage
        if usage is None:  # cut short: count conservatively, never 0
            seen = box.input_seen if box.input_seen is not None else input_bytes
            usage = Usage(seen, max(1, min(max_tokens, box.generated_bytes())))
            logger.warning(
                "chat stream ended without the provider's usage: counted conservatively",
                extra={"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
            )
        await close_reservation(
            tenant_id, reservation, opened.provider, opened.model, usage.as_dict(), started, fell_back
        )
        if cache_key is not None:
            await cache.put(cache_key, _cached_value(box.answer(opened.provider, opened.model)), held)
    finally:
        await cache.unlock(held)


async def _replay(value: dict[str, Any], include_usage: bool, trailer: Trailer | None) -> AsyncIterator[str]:
    """A cached answer as the stream it would have been."""
    cid, created, model = completion_id(), int(time.time()), value["model"]
    yield chunk(cid, model, created, {"role": "assistant", "content": ""})
    if value.get("content"):
        yield chunk(cid, model, created, {"content": value["content"]})
    for i, call in enumerate(value.get("tool_calls") or []):
        yield chunk(cid, model, created, {"tool_calls": [{"index": i, **call}]})
    yield chunk(cid, model, created, {}, value.get("finish_reason") or "stop")
    if include_usage:
        yield usage_chunk(cid, model, created, Usage(0, 0))
    if trailer is not None:
        yield trailer(value.get("content") or "")
    yield DONE
