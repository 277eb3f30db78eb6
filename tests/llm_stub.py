"""Local servers that speak the OpenAI and Anthropic HTTP APIs, scriptable per test.

The answers follow the providers' wire formats closely enough for the official SDKs to parse
them: plain text, tool calls, structured output, and streams (OpenAI's `chat.completion.chunk`
lines ending in `data: [DONE]`; Anthropic's `message_start` ... `message_stop` events)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

# Action keys that shape the answer itself; they may sit at the top level of an action.
_ANSWER_KEYS = (
    "content",
    "tool_call",
    "tool_calls",
    "finish",
    "stream_delay",
    "fail_after_chunks",
    "fail_with",
    "ping",
)
# The neutral finish reason (OpenAI's names) as Anthropic's stop_reason.
_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


class StreamCut(Exception):
    """Raised inside the stub's stream to drop the connection mid-body (`fail_after_chunks`)."""


class _HideStreamCuts(logging.Filter):
    """uvicorn logs an exception that ends a response; a scripted cut is not worth a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamCut))


@dataclass
class ToolCall:
    id: str
    name: str
    input: Any  # the arguments: a dict, or (OpenAI only) a raw string sent as is

    def arguments(self) -> str:
        return self.input if isinstance(self.input, str) else json.dumps(self.input)

    def input_object(self) -> Any:
        return json.loads(self.input) if isinstance(self.input, str) else self.input


@dataclass
class Reply:
    """What the stub answers, before it is put in either provider's format."""

    model: str
    text: str | None
    calls: list[ToolCall] = field(default_factory=list)
    finish: str = "stop"  # OpenAI's names: stop | length | tool_calls | content_filter
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # OpenAI prompt_tokens_details.cached_tokens / Anthropic cache_read_input_tokens
    cache_write: int = 0  # Anthropic cache_creation_input_tokens


class StubProviders:
    """`script[provider]` holds actions consumed one per request; when empty, `default` applies.

    Actions (keys combine in one dict):
      {"status": 429, "headers": {...}}  answer that HTTP error (before any stream chunk)
      {"delay": 2.0}                     wait before answering (before the headers of a stream)
      {"random_failure": 0.3}            (default only) that share of requests answers 500
      {"ok": {...}}                      usage overrides: prompt_tokens, completion_tokens, cached_tokens
                                         (OpenAI); input_tokens, output_tokens, cache_read, cache_write
                                         (Anthropic); also "content" (and any key below)
      {"content": "text"}                the exact answer text (e.g. a JSON string); when the request
                                         forces a tool, a JSON object text becomes that tool's input
      {"tool_call": {"name": "f", "arguments": {...}, "id"?: "call_x"}}  answer a tool call;
      {"tool_calls": [..]}               several (parallel) calls; arguments may be a raw JSON string
      {"finish": "length"}               the finish reason (OpenAI's names; Anthropic's mapped)
      {"stream_delay": 0.05}             seconds between stream chunks
      {"fail_after_chunks": 3}           a stream is cut (connection dropped) after that many chunks;
      {"fail_with": "error"}             ... or, with this, ends with the provider's error event instead,
      {"fail_with": "eof"}               ... or ends the body cleanly there (no `[DONE]`, no stop event)
      {"ping": true}                     Anthropic streams send a `ping` event after `message_start`

    Unscripted answers: "<provider> says: <last turn's text[:40]>"; a forced tool (OpenAI named or
    "required", Anthropic {"type": "tool"} or "any") is called with `minimal_instance` of its
    schema; OpenAI `response_format` json_schema gets `minimal_instance` as JSON, json_object "{}".
    Stream keys only act on `"stream": true` requests.

    Counters, per provider: `calls`, `streams` (streams started), `chunks_sent` (SSE events
    written), `streams_completed`, `streams_cancelled` (the client went away before the end),
    `streams_cut` (ended by `fail_after_chunks`); `connections` (client ports seen, OpenAI)."""

    def __init__(self) -> None:
        self.script: dict[str, deque[dict[str, Any]]] = {"openai": deque(), "anthropic": deque(), "embeddings": deque()}
        self.default: dict[str, dict[str, Any]] = {"openai": {}, "anthropic": {}, "embeddings": {}}
        self.calls: Counter[str] = Counter()
        self.arrivals: defaultdict[str, list[float]] = defaultdict(list)  # time.monotonic() of each request
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.rng = random.Random(42)
        self.streams: Counter[str] = Counter()
        self.chunks_sent: Counter[str] = Counter()
        self.streams_completed: Counter[str] = Counter()
        self.streams_cancelled: Counter[str] = Counter()
        self.streams_cut: Counter[str] = Counter()
        self.connections: defaultdict[str, set[int]] = defaultdict(set)  # client ports seen: one per connection

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    async def _act(self, provider: str, body: dict[str, Any]) -> Response | dict[str, Any]:
        self.calls[provider] += 1
        self.arrivals[provider].append(time.monotonic())
        self.requests.append((provider, body))
        action = self.script[provider].popleft() if self.script[provider] else self.default[provider]
        if "delay" in action:
            await asyncio.sleep(action["delay"])
        if "status" in action:
            return JSONResponse(
                {"error": {"message": f"stub {action['status']}", "type": "stub"}},
                status_code=action["status"],
                headers=action.get("headers"),
            )
        if self.rng.random() < action.get("random_failure", 0.0):
            return JSONResponse({"error": {"message": "stub random failure"}}, status_code=500)
        ok: dict[str, Any] = {**action.get("ok", {}), **{k: action[k] for k in _ANSWER_KEYS if k in action}}
        return ok

    @staticmethod
    def usage_for(text: str, max_tokens: int) -> tuple[int, int]:
        return len(text.encode()) // 4 + 5, min(max_tokens, 7)

    # ---- what to answer --------------------------------------------------------------------

    def _reply(
        self, provider: str, body: dict[str, Any], outcome: dict[str, Any], prompt: str, max_tokens: int, last: str
    ) -> Reply:
        """The answer: scripted tool calls, else a forced tool's minimal input, else text."""
        new_id = _openai_call_id if provider == "openai" else _anthropic_call_id
        content: str | None = outcome.get("content")
        scripted = outcome.get("tool_calls") or ([outcome["tool_call"]] if "tool_call" in outcome else [])
        calls = [ToolCall(c.get("id") or new_id(), c["name"], c.get("arguments", {})) for c in scripted]
        text: str | None = content
        forced = _forced_tool(provider, body)
        if not calls and forced is not None:
            name, schema = forced
            parsed = _json_object(content)
            if parsed is not None:
                calls, text = [ToolCall(new_id(), name, parsed)], None
            elif content is None:
                calls = [ToolCall(new_id(), name, minimal_instance(schema))]
        if not calls and text is None:
            fmt = (body.get("response_format") or {}) if provider == "openai" else {}
            if fmt.get("type") == "json_schema":
                text = json.dumps(minimal_instance((fmt.get("json_schema") or {}).get("schema") or {"type": "object"}))
            elif fmt.get("type") == "json_object":
                text = "{}"
            else:
                text = f"{provider} says: {last[:40]}"
        input_tokens, output_tokens = self.usage_for(prompt, max_tokens)
        if provider == "openai":
            input_tokens = outcome.get("prompt_tokens", input_tokens)
            output_tokens = outcome.get("completion_tokens", output_tokens)
        else:
            input_tokens = outcome.get("input_tokens", input_tokens)
            output_tokens = outcome.get("output_tokens", output_tokens)
        return Reply(
            model=body["model"],
            text=text,
            calls=calls,
            finish=outcome.get("finish", "tool_calls" if calls else "stop"),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=outcome.get("cached_tokens" if provider == "openai" else "cache_read", 0),
            cache_write=outcome.get("cache_write", 0),
        )

    def _stream(self, provider: str, outcome: dict[str, Any], chunks: list[bytes], error: bytes) -> EventStream:
        fail_after = outcome.get("fail_after_chunks")
        return EventStream(
            self,
            provider,
            chunks,
            delay=float(outcome.get("stream_delay", 0.0)),
            fail_after=None if fail_after is None else int(fail_after),
            error_event={"error": error, "eof": b""}.get(outcome.get("fail_with", "")),
        )

    # ---- OpenAI ----------------------------------------------------------------------------

    async def openai(self, request: Request) -> Response:
        self.connections["openai"].add(request.client.port if request.client else 0)
        body = json.loads(await request.body())
        outcome = await self._act("openai", body)
        if isinstance(outcome, Response):
            return outcome
        messages = body["messages"]
        prompt = " ".join(_openai_message_text(m) for m in messages) + _extras_text(body)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 16
        last = _openai_content_text(messages[-1].get("content")) if messages else ""
        reply = self._reply("openai", body, outcome, prompt, max_tokens, last)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            error = _sse(None, {"error": {"message": "stub stream failure", "type": "server_error", "code": None}})
            return self._stream("openai", outcome, openai_chunks(reply, include_usage), error)
        return JSONResponse(openai_completion(reply))

    # ---- Anthropic -------------------------------------------------------------------------

    async def anthropic(self, request: Request) -> Response:
        body = json.loads(await request.body())
        outcome = await self._act("anthropic", body)
        if isinstance(outcome, Response):
            return outcome
        messages = body["messages"]
        system = _anthropic_content_text(body.get("system"))
        prompt = system + " " + " ".join(_anthropic_content_text(m["content"]) for m in messages) + _extras_text(body)
        last = _anthropic_content_text(messages[-1]["content"]) if messages else ""
        reply = self._reply("anthropic", body, outcome, prompt, body["max_tokens"], last)
        if body.get("stream"):
            error = _sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            chunks = anthropic_events(reply, ping=bool(outcome.get("ping")))
            return self._stream("anthropic", outcome, chunks, error)
        return JSONResponse(anthropic_message(reply))

    # ---- embeddings ------------------------------------------------------------------------

    @staticmethod
    def vector_for(text: str, dims: int) -> list[float]:
        """A deterministic unit vector per text."""
        import hashlib
        import math

        rng = random.Random(hashlib.sha256(text.encode()).digest())
        raw = [rng.gauss(0, 1) for _ in range(dims)]
        norm = math.sqrt(sum(v * v for v in raw))
        return [v / norm for v in raw]

    async def embeddings(self, request: Request) -> Response:
        body = json.loads(await request.body())
        outcome = await self._act("embeddings", body)
        if isinstance(outcome, Response):
            return outcome
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = body.get("dimensions") or 1536
        vectors = [self.vector_for(t, dims) for t in inputs]
        if body.get("encoding_format") == "base64":  # as OpenAI answers the SDK's default: float32, little-endian
            encoded: list[Any] = [base64.b64encode(struct.pack(f"<{dims}f", *v)).decode() for v in vectors]
        else:
            encoded = vectors
        data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)]
        return JSONResponse(
            {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}}
        )

    def app(self) -> Starlette:
        errors = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _HideStreamCuts) for f in errors.filters):
            errors.addFilter(_HideStreamCuts())
        return Starlette(
            routes=[
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/chat/completions", self.openai, methods=["POST"]),
                Route("/v1/messages", self.anthropic, methods=["POST"]),
            ]
        )


class EventStream(Response):
    """A `text/event-stream` body written one chunk at a time. It watches for the client going
    away (counted in `streams_cancelled`) and can cut the connection after N chunks."""

    def __init__(
        self,
        stub: StubProviders,
        provider: str,
        chunks: list[bytes],
        *,
        delay: float,
        fail_after: int | None,
        error_event: bytes | None,
    ) -> None:
        self.stub, self.provider, self.chunks = stub, provider, chunks
        self.delay, self.fail_after, self.error_event = delay, fail_after, error_event
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stub, provider = self.stub, self.provider
        stub.streams[provider] += 1
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            for i, data in enumerate(self.chunks):
                if self.fail_after is not None and i >= self.fail_after:
                    stub.streams_cut[provider] += 1
                    if self.error_event is None:
                        raise StreamCut(f"{provider} stream cut after {i} chunks")
                    await send({"type": "http.response.body", "body": self.error_event, "more_body": False})
                    return
                if i and self.delay:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(gone.wait(), self.delay)
                else:
                    await asyncio.sleep(0)  # lets a disconnect be seen
                if gone.is_set():
                    stub.streams_cancelled[provider] += 1
                    return
                await send({"type": "http.response.body", "body": data, "more_body": True})
                stub.chunks_sent[provider] += 1
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            stub.streams_completed[provider] += 1
        finally:
            watcher.cancel()


# ---- wire formats ----------------------------------------------------------------------------


def _sse(event: str | None, data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


def _words(text: str) -> list[str]:
    """The text in pieces that join back to it: one word (with the space before it) each."""
    return [p for p in re.split(r"(?<=\S)(?=\s)", text) if p]


def _slices(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def openai_completion(r: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": r.text, "refusal": None}
    if r.calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments()}} for c in r.calls
        ]
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": r.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": r.finish}],
        "usage": _openai_usage(r),
    }


def _openai_usage(r: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": r.input_tokens,
        "completion_tokens": r.output_tokens,
        "total_tokens": r.input_tokens + r.output_tokens,
        "prompt_tokens_details": {"cached_tokens": r.cached_tokens},
    }


def openai_chunks(r: Reply, include_usage: bool) -> list[bytes]:
    """`data: {chat.completion.chunk}` lines: role, content deltas, tool call deltas, finish, usage, [DONE]."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": r.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return _sse(None, body)

    first: dict[str, Any] = {"role": "assistant", "content": "" if r.text is not None else None, "refusal": None}
    out = [chunk(first)]
    out += [chunk({"content": piece}) for piece in _words(r.text or "")]
    for i, c in enumerate(r.calls):
        head = {"index": i, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": ""}}
        out.append(chunk({"tool_calls": [head]}))
        out += [chunk({"tool_calls": [{"index": i, "function": {"arguments": s}}]}) for s in _slices(c.arguments())]
    out.append(chunk({}, r.finish))
    if include_usage:
        usage = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": r.model}
        out.append(_sse(None, {**usage, "system_fingerprint": None, "choices": [], "usage": _openai_usage(r)}))
    out.append(_sse(None, "[DONE]"))
    return out


def _anthropic_blocks(r: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = (
        [{"type": "text", "text": r.text}] if r.text or (r.text is not None and not r.calls) else []
    )
    blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.input_object()} for c in r.calls]
    return blocks


def _anthropic_usage(r: Reply, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": r.input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": r.cached_tokens,
        "cache_creation_input_tokens": r.cache_write,
    }


def anthropic_message(r: Reply) -> dict[str, Any]:
    return {
        "id": "msg_stub",
        "type": "message",
        "role": "assistant",
        "model": r.model,
        "content": _anthropic_blocks(r),
        "stop_reason": _ANTHROPIC_STOP.get(r.finish, r.finish),
        "stop_sequence": None,
        "usage": _anthropic_usage(r, r.output_tokens),
    }


def anthropic_events(r: Reply, ping: bool = False) -> list[bytes]:
    """message_start, per block content_block_start/_delta.../_stop, message_delta, message_stop."""
    start = {**anthropic_message(r), "content": [], "stop_reason": None, "usage": _anthropic_usage(r, 1)}
    out = [_sse("message_start", {"type": "message_start", "message": start})]
    if ping:
        out.append(_sse("ping", {"type": "ping"}))
    for index, block in enumerate(_anthropic_blocks(r)):
        if block["type"] == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in _words(block["text"])]
        else:
            opening = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": s} for s in _slices(json.dumps(block["input"]))]
        out.append(
            _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening})
        )
        out += [
            _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
        ]
        out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    stop = {"stop_reason": _ANTHROPIC_STOP.get(r.finish, r.finish), "stop_sequence": None}
    out.append(
        _sse("message_delta", {"type": "message_delta", "delta": stop, "usage": {"output_tokens": r.output_tokens}})
    )
    out.append(_sse("message_stop", {"type": "message_stop"}))
    return out


# ---- reading requests ------------------------------------------------------------------------


def _openai_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _anthropic_call_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]


def _openai_content_text(content: Any) -> str:
    """A string, or the text of a list of parts (`text`; images carry none here)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content if p.get("type") == "text")


def _openai_message_text(message: dict[str, Any]) -> str:
    pieces = [_openai_content_text(message.get("content"))]
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        pieces.append(f"{fn.get('name', '')} {fn.get('arguments', '')}")
    return " ".join(pieces)


def _anthropic_content_text(content: Any) -> str:
    """A string, or the text of blocks: text, tool_use (name and input), tool_result (its content)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    pieces = []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            pieces.append(block.get("text", ""))
        elif kind == "tool_use":
            pieces.append(f"{block.get('name', '')} {json.dumps(block.get('input', {}))}")
        elif kind == "tool_result":
            pieces.append(_anthropic_content_text(block.get("content")))
    return " ".join(pieces)


def _extras_text(body: dict[str, Any]) -> str:
    """Tool definitions and a response schema count as input too (absent from plain prompts)."""
    extras = [body[k] for k in ("tools", "response_format") if body.get(k)]
    return "".join(" " + json.dumps(e) for e in extras)


def _json_object(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _forced_tool(provider: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The tool the request makes the model call, with its schema: a named choice, or the
    first tool for OpenAI `required` / Anthropic `any`."""
    tools: list[dict[str, Any]] = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or choice is None:
        return None
    if provider == "openai":
        schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools}
        if choice == "required":
            name: str | None = next(iter(schemas))
        elif isinstance(choice, dict) and choice.get("type") == "function":
            name = choice["function"]["name"]
        else:
            name = None
    else:
        schemas = {t["name"]: t.get("input_schema") or {} for t in tools if "name" in t}
        kind = choice.get("type") if isinstance(choice, dict) else None
        name = choice["name"] if kind == "tool" else next(iter(schemas), None) if kind == "any" else None
    if name is None or name not in schemas:
        return None
    return name, schemas[name]


_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "x@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


def minimal_instance(schema: Any, root: Any = None, refs: frozenset[str] = frozenset()) -> Any:
    """A small value valid for a JSON schema: string "x", integer 1, number 1.5, boolean true,
    array [] (or minItems copies), object with its required properties (all when `required`
    is absent); const/enum/anyOf/oneOf take the first choice, local $refs are followed."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return {}
    if "$ref" in schema:
        ref: str = schema["$ref"]
        return {} if ref in refs else minimal_instance(_resolve(schema, root), root, refs | {ref})
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = schema[key]
            choice = next((o for o in options if not (isinstance(o, dict) and o.get("type") == "null")), options[0])
            return minimal_instance(choice, root, refs)
    if schema.get("allOf"):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve(part, root)
            merged["properties"] = {**merged.get("properties", {}), **part.get("properties", {})}
            merged["required"] = [*merged.get("required", []), *part.get("required", [])]
            merged.setdefault("type", part.get("type"))
        return minimal_instance(merged, root, refs)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    makers: dict[str, Callable[[], Any]] = {
        "string": lambda: _FORMATS.get(schema.get("format", ""), "x" * max(1, int(schema.get("minLength", 1)))),
        "integer": lambda: math.ceil(_number(schema, 1)),
        "number": lambda: _number(schema, 1.5),
        "boolean": lambda: True,
        "null": lambda: None,
        "array": lambda: [minimal_instance(schema.get("items", {}), root, refs)] * int(schema.get("minItems", 0)),
    }
    if kind in makers:
        return makers[kind]()
    props: dict[str, Any] = schema.get("properties") or {}
    names = schema.get("required", list(props))
    return {n: minimal_instance(props.get(n, {"type": "string"}), root, refs) for n in names}


def _resolve(schema: Any, root: Any) -> Any:
    """A local `$ref` ("#/$defs/Name") followed to its schema (chains too)."""
    seen: set[str] = set()
    while isinstance(schema, dict) and "$ref" in schema and schema["$ref"] not in seen:
        seen.add(schema["$ref"])
        target = root
        for part in schema["$ref"].removeprefix("#").split("/")[1:]:
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = target
    return schema


def _number(schema: dict[str, Any], preferred: float) -> float:
    value = preferred
    if "minimum" in schema:
        value = max(value, schema["minimum"])
    if "exclusiveMinimum" in schema:
        value = max(value, schema["exclusiveMinimum"] + 1)
    if "maximum" in schema:
        value = min(value, schema["maximum"])
    if "exclusiveMaximum" in schema:
        value = min(value, schema["exclusiveMaximum"] - 1)
    return value


class ResettingServer:
    """Accepts connections and closes them at once: a connection reset for the client."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import struct

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
            conn.close()

    def close(self) -> None:
        self.sock.close()
