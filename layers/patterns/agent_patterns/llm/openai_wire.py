"""OpenAI's Chat Completions wire format for our answers: the response body, the models list
and (for streams) the chunks, so the official SDK and the frameworks on it parse them as is."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from agent_patterns.llm.chat import ChatAnswer, Usage


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def usage_body(usage: Usage) -> dict[str, Any]:
    prompt = usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    }


def completion_body(answer: ChatAnswer, cid: str | None = None) -> dict[str, Any]:
    return {
        "id": cid or completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model,
        "choices": [{"index": 0, "message": answer.message(), "finish_reason": answer.finish_reason, "logprobs": None}],
        "usage": usage_body(answer.usage),
        "system_fingerprint": None,
    }


def models_body(ids: list[tuple[str, str]]) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": o} for i, o in ids]}


def chunk(cid: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None) -> str:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return "data: " + json.dumps(body, separators=(",", ":")) + "\n\n"


def usage_chunk(cid: str, model: str, created: int, usage: Usage) -> str:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_body(usage),
    }
    return "data: " + json.dumps(body, separators=(",", ":")) + "\n\n"


def error_chunk(message: str, code: str) -> str:
    """How a stream that already sent tokens reports a failure (the status is already 200)."""
    body = {"error": {"message": message, "type": "server_error", "code": code, "param": None}}
    return "data: " + json.dumps(body, separators=(",", ":")) + "\n\n"


DONE = "data: [DONE]\n\n"
