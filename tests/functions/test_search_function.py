"""POST /v1/documents and POST /v1/search through the search function's app."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from psycopg import sql

from agent_patterns.backends import connection
from agent_patterns.backends.postgres import reset_postgres
from agent_patterns.config import reset_settings
from tests.conftest import bearer, function_client
from tests.llm_stub import StubProviders
from tests.patterns.test_vectors import unit


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with function_client("search") as client:
        yield client


async def test_two_tenants_with_identical_content_never_see_each_other(api: httpx.AsyncClient, stub: object) -> None:
    a, b = f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    doc = {"documents": [{"id": "same", "text": "Lambda functions scale per request.", "metadata": {"k": "v"}}]}
    for tenant in (a, b):
        response = await api.post("/v1/documents", json=doc, headers=bearer(tenant))
        assert response.status_code == 200, response.text
        assert response.json() == {"documents": [{"id": "same", "chunks": 1}]}
    hits_a = (await api.post("/v1/search", json={"query": "lambda scaling", "limit": 10}, headers=bearer(a))).json()
    hits_b = (await api.post("/v1/search", json={"query": "lambda scaling", "limit": 10}, headers=bearer(b))).json()
    assert len(hits_a["matches"]) == 1 and len(hits_b["matches"]) == 1
    assert hits_a["matches"][0]["chunk_id"] != hits_b["matches"][0]["chunk_id"]
    # A body naming another tenant is refused: the token decides.
    spoof = await api.post("/v1/search", json={"query": "lambda", "tenant_id": b}, headers=bearer(a))
    assert spoof.status_code == 422 and "tenant_id" in spoof.json()["error"]["message"]


async def test_search_by_vector_and_hybrid(api: httpx.AsyncClient, stub: object) -> None:
    t = f"h{uuid.uuid4().hex[:8]}"
    chunks = [
        {"text": "pricing of the enterprise plan", "embedding": unit(1)},
        {"text": "onboarding checklist for engineers", "embedding": unit(1)},
    ]
    assert (
        await api.post("/v1/documents", json={"documents": [{"id": "d", "chunks": chunks}]}, headers=bearer(t))
    ).status_code == 200
    by_vector = (await api.post("/v1/search", json={"vector": unit(1), "limit": 2}, headers=bearer(t))).json()
    assert len(by_vector["matches"]) == 2 and by_vector["matches"][0]["similarity"] > 0.99
    hybrid = (
        await api.post(
            "/v1/search",
            json={"query": "onboarding checklist", "vector": unit(1), "limit": 2, "mode": "hybrid"},
            headers=bearer(t),
        )
    ).json()
    assert hybrid["matches"][0]["content"] == "onboarding checklist for engineers"


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/search", {"vector": [0.1, 0.2]}, 422, "dimensions"),
        ("/v1/search", {"query": ""}, 422, "query"),
        ("/v1/search", {"query": "x", "limit": 0}, 422, "limit"),
        ("/v1/search", {"query": "x", "limit": 101}, 422, "limit"),
        ("/v1/documents", {"documents": [{"text": " "}]}, 422, "text"),
        ("/v1/documents", {"documents": [{"text": "x" * 200_001}]}, 422, "longer than"),
        ("/v1/documents", {"documents": [{"chunks": [{"text": "a", "embedding": [1.0]}]}]}, 422, "dimensions"),
        ("/v1/documents", {"documents": [{"text": "a"}] * 101}, 413, "at most 100"),
    ],
)
async def test_bad_input_is_refused_with_the_reason_and_stores_nothing(
    api: httpx.AsyncClient, stub: StubProviders, path: str, body: dict[str, Any], status: int, fragment: str
) -> None:
    t = f"r{uuid.uuid4().hex[:8]}"
    response = await api.post(path, json=body, headers=bearer(t))
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]
    assert stub.calls.total() == 0  # refused before any embedding was asked for
    async with connection() as db:
        cur = await db.execute("SELECT to_regclass(%s)", (f"tenant_{t}.documents",))
        table = (await cur.fetchone() or (None,))[0]
        if table is not None:  # the schema may exist; it must hold nothing
            for name in ("documents", "chunks", "embeddings"):
                count = await db.execute(
                    sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(f"tenant_{t}"), sql.Identifier(name))
                )
                assert await count.fetchone() == (0,), name


async def test_postgres_down_is_503_and_the_function_recovers(
    api: httpx.AsyncClient, stub: object, settings_env: pytest.MonkeyPatch
) -> None:
    good = settings_env  # the URL to return to is restored by the fixture
    import os

    original = os.environ["DATABASE_URL"]
    good.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    good.setenv("DATABASE_CONNECT_TIMEOUT", "1")
    reset_settings()
    reset_postgres()
    down = await api.post("/v1/search", json={"vector": unit(1)}, headers=bearer("acme"))
    assert down.status_code == 503 and down.json()["error"]["code"] == "backend_unavailable"
    assert down.headers["retry-after"] == "5"
    good.setenv("DATABASE_URL", original)
    reset_settings()
    up = await api.post("/v1/search", json={"vector": unit(1)}, headers=bearer("acme"))
    assert up.status_code == 200


async def test_delete_a_document_then_it_is_gone(api: httpx.AsyncClient, stub: object) -> None:
    t = f"d{uuid.uuid4().hex[:8]}"
    body = {"documents": [{"id": "gone", "chunks": [{"text": "bye", "embedding": unit(3)}]}]}
    assert (await api.post("/v1/documents", json=body, headers=bearer(t))).status_code == 200
    before = (await api.post("/v1/search", json={"vector": unit(3)}, headers=bearer(t))).json()
    assert [m["content"] for m in before["matches"]] == ["bye"]  # there, until deleted
    assert (await api.delete("/v1/documents/gone", headers=bearer(t))).status_code == 204
    assert (await api.delete("/v1/documents/gone", headers=bearer(t))).status_code == 404
    hits = (await api.post("/v1/search", json={"vector": unit(3)}, headers=bearer(t))).json()
    assert hits["matches"] == []
