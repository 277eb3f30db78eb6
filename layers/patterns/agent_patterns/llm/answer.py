"""Answers with sources: retrieve from the tenant's index, answer from numbered sources only,
cite them.

Retrieval is the hybrid search (vector + full text). A chunk counts as relevant when its vector
similarity reaches ANSWER_MIN_SIMILARITY or its text matches the question's terms; with nothing
relevant the answer says so and no model is called (nothing is spent on a guess). The model is
asked to cite with [n]; the citations returned are the sources it actually cited, each pointing
at its chunk. The call goes through the gateway like any other: cache, budgets, ledger,
fallback and streaming all apply.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from pydantic import Field

from agent_patterns.inputs import RequestBody
from agent_patterns.llm.chat import ChatRequest
from agent_patterns.llm.settings import llm_settings

NOT_FOUND = "I could not find this in your documents."
SYSTEM = (
    "Answer the question using only the numbered sources below. Cite the sources you use with "
    "their numbers in square brackets, like [1] or [2][3], right after the claim they support. "
    "If the sources do not contain the answer, say that you do not know; never guess."
)
CITATION = re.compile(r"\[(\d{1,3})\]")
SNIPPET_CHARS = 300


class AnswerRequest(RequestBody):
    question: str = Field(min_length=1, max_length=4000)
    filter: dict[str, Any] | None = Field(None, description="metadata containment, as in /v1/search")
    k: int = Field(6, ge=1, le=20, description="sources to retrieve")
    stream: bool = False
    model: str = Field("default", max_length=128)
    max_tokens: int | None = Field(None, ge=1)


def _relevant(match: Any, min_similarity: float) -> bool:
    keyword = getattr(match, "keyword_rank", None)
    return bool(keyword) or float(match.similarity or 0.0) >= min_similarity


def _source(n: int, match: Any) -> dict[str, Any]:
    metadata = match.metadata or {}
    return {
        "n": n,
        "url": metadata.get("url"),
        "title": metadata.get("title"),
        "document_id": match.document_id,
        "chunk_id": str(match.chunk_id),
        "snippet": match.content[:SNIPPET_CHARS],
        "content": match.content,
    }


def _prompt(question: str, sources: list[dict[str, Any]]) -> str:
    blocks = []
    for s in sources:
        label = " — ".join(x for x in (s["title"], s["url"] or s["document_id"]) if x)
        blocks.append(f"[{s['n']}] {label}\n{s['content']}")
    return "Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"


def citations(text: str, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sources the answer cites, in number order, without their full content."""
    cited = {int(n) for n in CITATION.findall(text)}
    return [{k: v for k, v in s.items() if k != "content"} for s in sources if s["n"] in cited]


async def retrieve(tenant_id: str, req: AnswerRequest) -> list[dict[str, Any]]:
    from agent_patterns.search import search

    matches = await search(
        tenant_id, query=req.question, vector=None, limit=req.k, metadata_filter=req.filter, mode="hybrid"
    )
    threshold = llm_settings().answer_min_similarity
    relevant = [m for m in matches if _relevant(m, threshold)]
    return [_source(n, m) for n, m in enumerate(relevant, start=1)]


def chat_request(req: AnswerRequest, sources: list[dict[str, Any]]) -> ChatRequest:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": _prompt(req.question, sources)}]
    return ChatRequest.model_validate(
        {
            "model": req.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": req.max_tokens,
            "stream": req.stream,
        }
    )


async def answer(tenant_id: str, req: AnswerRequest, *, daily_budget: int | None = None) -> dict[str, Any]:
    """The answer, the sources it cites, and what it cost."""
    from agent_patterns.llm.chat_call import call_chat

    sources = await retrieve(tenant_id, req)
    if not sources:
        return {"answer": NOT_FOUND, "citations": [], "grounded": False, "cached": False, "cost_usd": 0.0}
    result = await call_chat(chat_request(req, sources), tenant_id, daily_budget=daily_budget)
    text = result.answer.content or ""
    cited = citations(text, sources)
    return {
        "answer": text,
        "citations": cited,
        "grounded": bool(cited),
        "model": result.answer.model,
        "provider": result.answer.provider,
        "cached": result.cached,
        "cost_usd": result.cost_usd,
    }


async def answer_stream(tenant_id: str, req: AnswerRequest, *, daily_budget: int | None = None) -> Any:
    """The answer as a stream of OpenAI chunks (as streamed completions), citations last."""
    from fastapi.responses import StreamingResponse

    from agent_patterns.llm.chat_stream import SSE_HEADERS, stream_chat

    sources = await retrieve(tenant_id, req)
    if not sources:
        return StreamingResponse(not_found_stream(), media_type="text/event-stream", headers=SSE_HEADERS)
    return await stream_chat(
        chat_request(req, sources),
        tenant_id,
        daily_budget=daily_budget,
        trailer=lambda text: cited_chunk(text, sources),
    )


def cited_chunk(text: str, sources: list[dict[str, Any]]) -> str:
    """The chunk a streamed answer ends with before `[DONE]`: its citations."""
    cited = citations(text, sources)
    extra = {"object": "chat.completion.chunk", "choices": [], "citations": cited, "grounded": bool(cited)}
    return "data: " + json.dumps(extra, separators=(",", ":")) + "\n\n"


async def not_found_stream() -> AsyncIterator[str]:
    """The 'nothing relevant' answer as a stream (no model call, nothing spent)."""
    import time

    from agent_patterns.llm.openai_wire import DONE, chunk, completion_id

    cid, created = completion_id(), int(time.time())
    yield chunk(cid, "none", created, {"role": "assistant", "content": NOT_FOUND})
    yield chunk(cid, "none", created, {}, "stop")
    yield cited_chunk("", [])
    yield DONE
