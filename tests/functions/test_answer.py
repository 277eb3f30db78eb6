"""POST /v1/answer: retrieval from the tenant's index, an answer from numbered sources, and
citations that point at the chunks the answer used (stub embeddings and LLMs over HTTP)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import bearer, function_client
from tests.llm_stub import StubProviders

PAGES = [
    ("https://docs.example/paris", "Capitals", "The capital of France is Paris, on the Seine."),
    ("https://docs.example/tokyo", "Japan", "Tokyo has many train lines and a famous fish market."),
    ("https://docs.example/llamas", "Animals", "Llamas live in the Andes and carry loads."),
]


@pytest.fixture
async def llm() -> AsyncIterator[httpx.AsyncClient]:
    async with function_client("llm") as client:
        yield client


async def indexed(stub: StubProviders) -> str:
    t = "a" + uuid.uuid4().hex[:10]
    docs = [{"id": url, "text": text, "metadata": {"url": url, "title": title}} for url, title, text in PAGES]
    async with function_client("search") as search:
        response = await search.post("/v1/documents", json={"documents": docs}, headers=bearer(t))
    assert response.status_code == 200, response.text
    return t


async def test_an_answer_cites_the_page_it_came_from(llm: httpx.AsyncClient, stub: StubProviders) -> None:
    t = await indexed(stub)
    stub.script["openai"].append({"content": "Paris is the capital of France [1]."})
    response = await llm.post("/v1/answer", json={"question": "capital of France"}, headers=bearer(t))
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["answer"] == "Paris is the capital of France [1]." and data["grounded"] is True
    [cited] = data["citations"]
    assert cited["n"] == 1 and cited["url"] == "https://docs.example/paris" and cited["title"] == "Capitals"
    assert cited["document_id"] == "https://docs.example/paris" and "Seine" in cited["snippet"] and cited["chunk_id"]
    prompt = stub.requests[-1][1]["messages"][-1]["content"]
    assert "[1] Capitals — https://docs.example/paris" in prompt and "Question: capital of France" in prompt


async def test_nothing_relevant_says_so_and_spends_nothing(llm: httpx.AsyncClient, stub: StubProviders) -> None:
    t = await indexed(stub)
    before = stub.calls["openai"]
    response = await llm.post("/v1/answer", json={"question": "quantum chromodynamics"}, headers=bearer(t))
    data = response.json()
    assert data["answer"] == "I could not find this in your documents." and data["citations"] == []
    assert data["grounded"] is False and stub.calls["openai"] == before


async def test_a_streamed_answer_uses_the_completion_chunks_and_ends_with_its_citations(
    llm: httpx.AsyncClient, stub: StubProviders
) -> None:
    t = await indexed(stub)
    stub.script["openai"].append({"content": "Llamas carry loads in the Andes [1]."})
    async with llm.stream(
        "POST", "/v1/answer", json={"question": "llamas Andes", "stream": True}, headers=bearer(t)
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks: list[dict[str, Any]] = [json.loads(e) for e in events[:-1]]
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    assert text == "Llamas carry loads in the Andes [1]."
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["citations"][0]["url"] == "https://docs.example/llamas"


async def test_answer_input_is_checked(llm: httpx.AsyncClient, stub: StubProviders) -> None:
    for body in ({"question": ""}, {"question": "x", "k": 0}, {"question": "x", "topk": 3}):
        response = await llm.post("/v1/answer", json=body, headers=bearer("acme"))
        assert response.status_code == 422, body
