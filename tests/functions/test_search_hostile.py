"""Hostile input to the search function: every bad value is a 422 naming the field, nothing is
stored, and a request is stored whole or not at all."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent_patterns.config import reset_settings
from tests.conftest import bearer, function_client, tenant_rows
from tests.llm_stub import StubProviders
from tests.patterns.test_vectors import unit


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with function_client("search") as client:
        yield client


def tenant() -> str:
    return f"x{uuid.uuid4().hex[:10]}"


def raw(body: str, t: str) -> dict[str, Any]:
    """A request whose JSON text is sent as written (escapes like \\ud800 reach the parser)."""
    return {"content": body.encode(), "headers": {"content-type": "application/json", **bearer(t)}}


HOSTILE_DOCUMENTS = {
    "NUL in text": ('{"documents": [{"text": "a\\u0000b"}]}', "documents.0.text"),
    "lone surrogate in text": ('{"documents": [{"text": "a\\ud800b"}]}', "documents.0.text"),
    "NUL in a metadata value": (
        '{"documents": [{"text": "a", "metadata": {"k": "v\\u0000"}}]}',
        "documents.0.metadata",
    ),
    "lone surrogate in a metadata key": (
        '{"documents": [{"text": "a", "metadata": {"k\\udfff": 1}}]}',
        "documents.0.metadata",
    ),
    "NUL in a nested value": ('{"documents": [{"text": "a", "metadata": {"k": ["\\u0000"]}}]}', "documents.0.metadata"),
    "NUL in the id": ('{"documents": [{"id": "d\\u0000", "text": "a"}]}', "documents.0.id"),
    "NUL in a chunk": (
        '{"documents": [{"chunks": [{"text": "\\u0000", "embedding": [1]}]}]}',
        "documents.0.chunks.0.text",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_DOCUMENTS), ids=list(HOSTILE_DOCUMENTS))
async def test_text_postgres_would_refuse_is_a_422_naming_the_field(
    api: httpx.AsyncClient, stub: StubProviders, case: str
) -> None:
    body, field = HOSTILE_DOCUMENTS[case]
    t = tenant()
    response = await api.post("/v1/documents", **raw(body, t))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith(field)
    assert await tenant_rows(t, "documents") == 0
    assert stub.calls["embeddings"] == 0  # refused before any paid call


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"query": "a\\u0000"}', "query"),
        ('{"query": "\\ud800"}', "query"),
        ('{"vector": [0.1], "filter": {"k": "\\u0000"}}', "filter"),
    ],
)
async def test_hostile_search_input_is_a_422(
    api: httpx.AsyncClient, stub: StubProviders, body: str, field: str
) -> None:
    response = await api.post("/v1/search", **raw(body, tenant()))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith(field)


async def test_a_nul_in_a_document_id_to_delete_is_a_422(api: httpx.AsyncClient) -> None:
    response = await api.delete("/v1/documents/a%00b", headers=bearer(tenant()))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith("document_id")


def vector_with(component: float) -> list[float]:
    v = unit(3)
    v[0] = component
    return v


@pytest.mark.parametrize(
    ("vector", "says"),
    [(vector_with(1e39), "beyond what vector holds"), ([0.0] * 1536, "all zeros")],
    ids=["float32 overflow", "zero vector"],
)
async def test_vectors_the_column_cannot_hold_or_rank_are_refused(
    api: httpx.AsyncClient, vector: list[float], says: str
) -> None:
    t = tenant()
    doc = {"documents": [{"id": "d", "chunks": [{"text": "t", "embedding": vector}]}]}
    stored = await api.post("/v1/documents", json=doc, headers=bearer(t))
    assert stored.status_code == 422 and says in stored.text, stored.text
    found = await api.post("/v1/search", json={"vector": vector}, headers=bearer(t))
    assert found.status_code == 422 and says in found.text, found.text
    assert await tenant_rows(t, "documents") == 0


async def test_a_request_that_fails_midway_stores_none_of_its_documents(
    api: httpx.AsyncClient, settings_env: pytest.MonkeyPatch
) -> None:
    """halfvec holds at most 65504: the second document fails inside the transaction, after the
    first was written; the client gets a 422 and the tenant holds nothing."""
    settings_env.setenv("EMBEDDING_STORAGE", "halfvec")
    reset_settings()
    t = tenant()
    docs = [
        {"id": "fine", "chunks": [{"text": "ok", "embedding": unit(1)}]},
        {"id": "too-big-for-halfvec", "chunks": [{"text": "no", "embedding": vector_with(70_000.0)}]},
    ]
    response = await api.post("/v1/documents", json={"documents": docs}, headers=bearer(t))
    assert response.status_code == 422, response.text
    assert "halfvec" in response.json()["error"]["message"]
    assert await tenant_rows(t, "documents") == 0


async def test_metadata_and_queries_are_capped(api: httpx.AsyncClient, settings_env: pytest.MonkeyPatch) -> None:
    settings_env.setenv("SEARCH_MAX_METADATA_BYTES", "100")
    settings_env.setenv("SEARCH_MAX_QUERY_CHARS", "50")
    reset_settings()
    t = tenant()
    big = {"documents": [{"text": "a", "metadata": {"k": "v" * 200}}]}
    response = await api.post("/v1/documents", json=big, headers=bearer(t))
    assert response.status_code == 422 and "SEARCH_MAX_METADATA_BYTES" in response.text
    response = await api.post("/v1/search", json={"query": "q" * 51}, headers=bearer(t))
    assert response.status_code == 422 and "SEARCH_MAX_QUERY_CHARS" in response.text
    response = await api.post("/v1/search", json={"query": "q", "filter": {"k": "v" * 200}}, headers=bearer(t))
    assert response.status_code == 422 and "filter" in response.text
    assert await tenant_rows(t, "documents") == 0


async def test_tenants_never_share_embedding_cache_entries(api: httpx.AsyncClient, stub: StubProviders) -> None:
    text = f"a sentence only these two tenants write {uuid.uuid4()}"
    for t in (tenant(), tenant()):
        before = stub.calls["embeddings"]
        response = await api.post("/v1/documents", json={"documents": [{"text": text}]}, headers=bearer(t))
        assert response.status_code == 200, response.text
        assert stub.calls["embeddings"] == before + 1  # a miss for each tenant: nothing to time


@pytest.mark.parametrize("encode", [False, True], ids=["raw slashes", "percent-encoded"])
async def test_a_document_id_with_slashes_can_be_deleted(api: httpx.AsyncClient, encode: bool) -> None:
    from urllib.parse import quote

    t = tenant()
    doc_id = "https://docs.example.com/guide/intro?lang=en"
    doc = {"documents": [{"id": doc_id, "chunks": [{"text": "t", "embedding": unit(1)}]}]}
    assert (await api.post("/v1/documents", json=doc, headers=bearer(t))).status_code == 200
    path = quote(doc_id, safe="") if encode else quote(doc_id, safe="/:")
    response = await api.delete(f"/v1/documents/{path}", headers=bearer(t))
    assert response.status_code == 204, response.text
    assert await tenant_rows(t, "documents") == 0


async def test_postgres_lost_mid_ingest_is_a_503_and_stores_nothing(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server goes away after the first document was written inside the transaction."""
    import psycopg

    from agent_patterns.backends.postgres import database_url
    from agent_patterns.search import documents
    from agent_patterns.search.vectors import bulk_insert as real

    calls = 0

    async def then_the_server_goes(db: psycopg.AsyncConnection, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        result = await real(db, *args, **kwargs)
        if calls == 1:
            cur = await db.execute("SELECT pg_backend_pid()")
            row = await cur.fetchone()
            assert row is not None
            async with await psycopg.AsyncConnection.connect(database_url(), autocommit=True) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        return result

    monkeypatch.setattr(documents, "bulk_insert", then_the_server_goes)
    t = tenant()
    docs = [{"id": f"d{i}", "chunks": [{"text": f"t{i}", "embedding": unit(i)}]} for i in range(3)]
    response = await api.post("/v1/documents", json={"documents": docs}, headers=bearer(t))
    assert calls >= 1
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert await tenant_rows(t, "documents") == 0
