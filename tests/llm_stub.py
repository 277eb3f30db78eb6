"""Local servers that speak the OpenAI and Anthropic HTTP APIs, scriptable per test."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from collections import Counter, defaultdict, deque
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class StubProviders:
    """`script[provider]` holds actions consumed one per request; when empty, `default` applies.

    Actions: {"status": 429, "headers": {...}}, {"delay": 2.0}, {"ok": {...usage overrides...}},
    {"random_failure": 0.3} (default only: that share of requests answers 500)."""

    def __init__(self) -> None:
        self.script: dict[str, deque[dict[str, Any]]] = {"openai": deque(), "anthropic": deque(), "embeddings": deque()}
        self.default: dict[str, dict[str, Any]] = {"openai": {}, "anthropic": {}, "embeddings": {}}
        self.calls: Counter[str] = Counter()
        self.arrivals: defaultdict[str, list[float]] = defaultdict(list)  # time.monotonic() of each request
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.rng = random.Random(42)

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
        ok: dict[str, Any] = action.get("ok", {})
        return ok

    @staticmethod
    def usage_for(text: str, max_tokens: int) -> tuple[int, int]:
        return len(text.encode()) // 4 + 5, min(max_tokens, 7)

    async def openai(self, request: Request) -> Response:
        body = json.loads(await request.body())
        outcome = await self._act("openai", body)
        if isinstance(outcome, Response):
            return outcome
        text = " ".join(m["content"] for m in body["messages"])
        prompt_tokens, completion_tokens = self.usage_for(text, body.get("max_tokens") or 16)
        prompt_tokens = outcome.get("prompt_tokens", prompt_tokens)
        completion_tokens = outcome.get("completion_tokens", completion_tokens)
        content = outcome.get("content", f"openai says: {body['messages'][-1]['content'][:40]}")
        return JSONResponse(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "prompt_tokens_details": {"cached_tokens": outcome.get("cached_tokens", 0)},
                },
            }
        )

    async def anthropic(self, request: Request) -> Response:
        body = json.loads(await request.body())
        outcome = await self._act("anthropic", body)
        if isinstance(outcome, Response):
            return outcome
        text = (body.get("system") or "") + " " + body["messages"][-1]["content"]
        input_tokens, output_tokens = self.usage_for(text, body["max_tokens"])
        content = outcome.get("content", f"anthropic says: {body['messages'][-1]['content'][:40]}")
        return JSONResponse(
            {
                "id": "msg_stub",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": content}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": outcome.get("input_tokens", input_tokens),
                    "output_tokens": outcome.get("output_tokens", output_tokens),
                    "cache_read_input_tokens": outcome.get("cache_read", 0),
                    "cache_creation_input_tokens": outcome.get("cache_write", 0),
                },
            }
        )

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
        data = [
            {"object": "embedding", "index": i, "embedding": self.vector_for(t, dims)} for i, t in enumerate(inputs)
        ]
        return JSONResponse(
            {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}}
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/chat/completions", self.openai, methods=["POST"]),
                Route("/v1/messages", self.anthropic, methods=["POST"]),
            ]
        )


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
