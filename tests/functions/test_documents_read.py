"""Reading back what was stored: GET /v1/documents (paged, filtered), GET /v1/documents/{id},
and POST /v1/search's keyword mode and per-result scores."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from agent_patterns.paging import encode_cursor
from tests.conftest import bearer, function_client
from tests.functions.conftest import invoke_as_lambda
from tests.llm_stub import StubProviders
from tests.patterns.test_vectors import near, unit


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with function_client("search") as client:
        yield client


def tenant() -> str:
    return f"g{uuid.uuid4().hex[:10]}"


def doc(doc_id: str, *texts: str, metadata: dict[str, Any] | None = None, seed: int = 1) -> dict[str, Any]:
    """A document with precomputed chunks: storing it makes no embeddings call."""
    chunks = [{"text": text, "embedding": unit(seed + n)} for n, text in enumerate(texts)]
    return {"id": doc_id, "chunks": chunks, **({"metadata": metadata} if metadata is not None else {})}


async def store(api: httpx.AsyncClient, t: str, *docs: dict[str, Any]) -> None:
    response = await api.post("/v1/documents", json={"documents": list(docs)}, headers=bearer(t))
    assert response.status_code == 200, response.text


async def all_pages(api: httpx.AsyncClient, t: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.get("/v1/documents", params=query, headers=bearer(t))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"documents", "next_cursor"}
        pages.append(body["documents"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, "paging does not end"


async def test_paging_through_45_documents_returns_each_once_in_id_order(
    api: httpx.AsyncClient, stub: StubProviders
) -> None:
    t = tenant()
    ids = [f"doc-{n:02d}" for n in range(45)]
    await store(api, t, *(doc(i, f"text of {i}", metadata={"n": n}, seed=n) for n, i in enumerate(ids)))
    await store(api, t, doc("doc-07", "first part", "second part", "third part", metadata={"n": 7}))  # 3 chunks
    pages = await all_pages(api, t, limit=20)
    assert [len(p) for p in pages] == [20, 20, 5]
    listed = [d["id"] for page in pages for d in page]
    assert listed == sorted(ids)
    first = pages[0][0]
    assert set(first) == {"id", "metadata", "chunks", "created_at", "updated_at"}
    assert first["id"] == "doc-00" and first["metadata"] == {"n": 0} and first["chunks"] == 1
    assert next(d for d in pages[0] if d["id"] == "doc-07")["chunks"] == 3
    assert stub.calls["embeddings"] == 0
    default = (await api.get("/v1/documents", headers=bearer(t))).json()
    assert len(default["documents"]) == 20 and default["next_cursor"] is not None  # limit defaults to 20


async def test_paging_is_keyset_stable_while_documents_come_and_go(api: httpx.AsyncClient, stub: object) -> None:
    t = tenant()
    await store(api, t, *(doc(f"d{n}", "x", seed=n) for n in range(6)))
    first = (await api.get("/v1/documents", params={"limit": 3}, headers=bearer(t))).json()
    assert [d["id"] for d in first["documents"]] == ["d0", "d1", "d2"]
    assert (await api.delete("/v1/documents/d1", headers=bearer(t))).status_code == 204  # already seen
    await store(api, t, doc("d25", "late", seed=9))  # after the cursor: shows up on a later page
    rest = await api.get("/v1/documents", params={"limit": 3, "cursor": first["next_cursor"]}, headers=bearer(t))
    assert [d["id"] for d in rest.json()["documents"]] == ["d25", "d3", "d4"]


async def test_the_metadata_filter_is_search_containment(api: httpx.AsyncClient, stub: object) -> None:
    t = tenant()
    docs = [
        doc(f"m{n:02d}", f"text {n}", metadata={"team": "eng" if n % 3 == 0 else "ops", "tags": ["a", f"t{n % 2}"]})
        for n in range(12)
    ]
    await store(api, t, *docs, doc("plain", "no metadata", seed=50))
    eng = [d["id"] for page in await all_pages(api, t, limit=2, filter='{"team": "eng"}') for d in page]
    assert eng == ["m00", "m03", "m06", "m09"]
    nested = [d["id"] for page in await all_pages(api, t, filter='{"team": "ops", "tags": ["t1"]}') for d in page]
    assert nested == ["m01", "m05", "m07", "m11"]  # jsonb @>: an array contains the listed elements
    for flt in ({"team": "eng"}, {"team": "ops", "tags": ["t1"]}, {"tags": ["a"]}):
        listed = {d["id"] for page in await all_pages(api, t, filter=json.dumps(flt)) for d in page}
        found = await api.post("/v1/search", json={"vector": unit(1), "limit": 100, "filter": flt}, headers=bearer(t))
        assert listed == {m["document_id"] for m in found.json()["matches"]}, flt  # the same semantics
    everything = [d["id"] for page in await all_pages(api, t, filter="{}") for d in page]
    assert len(everything) == 13


@pytest.mark.parametrize(
    "flt",
    [
        "not json",
        "[1, 2]",
        '"eng"',
        '{"k": "a\\u0000"}',
        '{"k\\ud800": 1}',
        '{"k": NaN}',
        "[" * 5000,
        '{"k": ' + "[" * 500 + "]" * 500 + "}",
    ],
    ids=["not JSON", "an array", "a string", "NUL", "lone surrogate", "NaN", "too deep to parse", "deeply nested"],
)
async def test_a_bad_filter_is_a_422_naming_it(api: httpx.AsyncClient, flt: str) -> None:
    response = await api.get("/v1/documents", params={"filter": flt}, headers=bearer(tenant()))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith("filter")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "",
        "%%%",
        b64(b"not json"),
        b64(b"\xff\xfe"),
        b64(b"[1, 2]"),
        b64(b'{"k": "documents"}'),
        b64(b'{"k": "documents", "after": 7}'),
        b64(b'{"k": "documents", "after": "a\\u0000"}'),
        encode_cursor("runs", ["2026-01-01T00:00:00+00:00", str(uuid.UUID(int=1))]),
        "A" * 5000,
        b64(b'{"k": "documents", "after": ' + b"[" * 1400 + b"]" * 1400 + b"}"),
        b64(b'{"k": "documents", "after": ' + b"[" * 100 + b"]" * 100 + b"}"),
    ],
    ids=[
        "not base64",
        "empty",
        "percent signs",
        "not JSON",
        "not UTF-8",
        "not an object",
        "no position",
        "a number",
        "NUL",
        "a runs cursor",
        "too long",
        "1400 levels deep",
        "100 levels deep",
    ],
)
async def test_a_malformed_cursor_is_a_422_never_a_500(api: httpx.AsyncClient, cursor: str) -> None:
    t = tenant()
    await store(api, t, doc("a", "x"), doc("b", "y"))
    response = await api.get("/v1/documents", params={"cursor": cursor}, headers=bearer(t))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and error["message"].startswith("cursor")


@pytest.mark.parametrize("limit", [0, 101, -1, "ten"])
async def test_limit_is_1_to_100(api: httpx.AsyncClient, limit: int | str) -> None:
    response = await api.get("/v1/documents", params={"limit": limit}, headers=bearer(tenant()))
    assert response.status_code == 422 and "limit" in response.json()["error"]["message"]


@pytest.mark.parametrize("encode", [False, True], ids=["raw slashes", "percent-encoded"])
async def test_get_one_document_with_slashes_and_its_chunks_in_order(
    api: httpx.AsyncClient, stub: StubProviders, encode: bool
) -> None:
    t = tenant()
    doc_id = "https://docs.example.com/guide/intro?lang=en"
    await store(api, t, doc(doc_id, "part one", "part two", "part three", metadata={"lang": "en"}))
    path = quote(doc_id, safe="") if encode else quote(doc_id, safe="/:")
    response = await api.get(f"/v1/documents/{path}", headers=bearer(t))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "metadata", "created_at", "updated_at", "chunks"}
    assert body["id"] == doc_id and body["metadata"] == {"lang": "en"}
    assert [(c["position"], c["content"]) for c in body["chunks"]] == [
        (0, "part one"),
        (1, "part two"),
        (2, "part three"),
    ]
    assert all(set(c) == {"chunk_id", "position", "content", "metadata"} for c in body["chunks"])
    assert all(c["metadata"] == {"lang": "en"} and uuid.UUID(c["chunk_id"]) for c in body["chunks"])
    # Replacing it keeps created_at and moves updated_at.
    await store(api, t, doc(doc_id, "only part", metadata={"lang": "fr"}))
    again = (await api.get(f"/v1/documents/{path}", headers=bearer(t))).json()
    assert [c["content"] for c in again["chunks"]] == ["only part"] and again["metadata"] == {"lang": "fr"}
    assert again["created_at"] == body["created_at"]
    assert datetime.fromisoformat(again["updated_at"]) > datetime.fromisoformat(body["updated_at"])
    assert stub.calls["embeddings"] == 0


async def test_unknown_and_other_tenants_documents_are_404(api: httpx.AsyncClient, stub: object) -> None:
    owner, other = tenant(), tenant()
    await store(api, owner, doc("secret/plan", "the plan"))
    assert (await api.get("/v1/documents/secret/plan", headers=bearer(owner))).status_code == 200
    for who, path in ((other, "secret/plan"), (owner, "secret/other"), (owner, "secret")):
        response = await api.get(f"/v1/documents/{path}", headers=bearer(who))
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
    listed = (await api.get("/v1/documents", headers=bearer(other))).json()
    assert listed == {"documents": [], "next_cursor": None}


async def test_a_nul_in_a_document_id_to_read_is_a_422(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/documents/a%00b", headers=bearer(tenant()))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith("document_id")


async def test_reading_needs_a_tenant(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/documents")).status_code == 401
    assert (await api.get("/v1/documents/x")).status_code == 401


async def test_keyword_mode_makes_no_embeddings_call_and_ranks_the_exact_term_first(
    api: httpx.AsyncClient, stub: StubProviders
) -> None:
    t = tenant()
    await store(
        api,
        t,
        doc("ledger", "Quarterly revenue grew in every region.", metadata={"kind": "report"}, seed=1),
        doc("zanzibar", "The Zanzibar spice report: quarterly revenue of cloves.", metadata={"kind": "report"}, seed=2),
        doc("notes", "Meeting notes about cloves and other spices.", metadata={"kind": "notes"}, seed=3),
    )
    found = await api.post("/v1/search", json={"query": "zanzibar", "mode": "keyword"}, headers=bearer(t))
    assert found.status_code == 200, found.text
    matches = found.json()["matches"]
    assert [m["document_id"] for m in matches] == ["zanzibar"]  # only the chunk holding the term
    top = matches[0]
    assert top["similarity"] is None and top["keyword_rank"] > 0 and top["score"] == top["keyword_rank"]
    assert set(top) == {"chunk_id", "document_id", "content", "similarity", "metadata", "score", "keyword_rank"}
    ranked = await api.post(
        "/v1/search", json={"query": "quarterly revenue report", "mode": "keyword", "limit": 5}, headers=bearer(t)
    )
    assert [m["document_id"] for m in ranked.json()["matches"]] == ["zanzibar"]  # all three terms (plainto_tsquery)
    cloves = await api.post(
        "/v1/search",
        json={"query": "cloves", "mode": "keyword", "filter": {"kind": "notes"}},
        headers=bearer(t),
    )
    assert [m["document_id"] for m in cloves.json()["matches"]] == ["notes"]
    assert stub.calls["embeddings"] == 0  # keyword mode never embeds the query
    assert stub.calls.total() == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"mode": "keyword", "vector": [0.1]}, "query"),
        ({"mode": "keyword", "query": "  "}, "query"),
        ({"mode": "keyword", "query": "x", "vector": [0.1]}, "vector"),
        ({"mode": "keyword", "query": "x\u0000"}, "query"),
    ],
)
async def test_keyword_mode_needs_text_and_no_vector(
    api: httpx.AsyncClient, stub: StubProviders, body: dict[str, Any], fragment: str
) -> None:
    response = await api.post("/v1/search", json=body, headers=bearer(tenant()))
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]["message"]
    assert stub.calls.total() == 0


async def test_hybrid_results_carry_their_score_components(api: httpx.AsyncClient, stub: StubProviders) -> None:
    """45 chunks close to the query vector push the text-only hit out of the vector candidates
    (40): its similarity is still reported, read from its own embedding."""
    t = tenant()
    query = unit(1)
    fillers = [{"text": f"filler note {n}", "embedding": near(query, 0.01, n)} for n in range(45)]
    both = {"text": "onboarding checklist for engineers", "embedding": query}
    text_only = {"text": "onboarding checklist archive", "embedding": unit(999)}
    await store(api, t, {"id": "h", "chunks": [*fillers, both, text_only]})
    body = {"query": "onboarding checklist", "vector": query, "limit": 5, "mode": "hybrid"}
    matches = (await api.post("/v1/search", json=body, headers=bearer(t))).json()["matches"]
    assert len(matches) == 5
    scores = [m["score"] for m in matches]
    assert scores == sorted(scores, reverse=True)
    top = matches[0]
    assert top["content"] == both["text"]
    assert top["similarity"] > 0.99 and top["keyword_rank"] > 0 and top["score"] > 1 / 61  # both sides add up
    archive = next(m for m in matches if m["content"] == text_only["text"])
    assert archive["keyword_rank"] > 0 and 0.3 < archive["similarity"] < 0.7  # its own, not 0.0
    assert 1 / 62 <= archive["score"] <= 1 / 61  # one side only: 1 / (60 + its text rank)
    vector_only = [m for m in matches if m["content"].startswith("filler")]
    assert vector_only and all(m["keyword_rank"] is None and m["similarity"] > 0.9 for m in vector_only)
    assert all(m["score"] < 1 / 61 for m in vector_only)  # rank 2 or later on the vector side alone
    by_vector = (await api.post("/v1/search", json={"vector": query, "limit": 3}, headers=bearer(t))).json()
    assert all(m["score"] == m["similarity"] and m["keyword_rank"] is None for m in by_vector["matches"])
    assert stub.calls.total() == 0


async def test_the_sample_event_lists_through_mangum_with_the_authorizer_tenant(
    api: httpx.AsyncClient, settings_env: pytest.MonkeyPatch
) -> None:
    """shared/events/search_list_documents.json (tenant `acme` from the JWT claims, a URL-encoded
    filter in the query string) as API Gateway sends it."""

    from agent_patterns.config import reset_settings
    from tests.conftest import SHARED

    marker = uuid.uuid4().hex
    await store(api, "acme", doc(f"sample-{marker}", "x", metadata={"team": "eng", "marker": marker}))
    settings_env.setenv("AUTH_MODE", "apigateway")
    reset_settings()
    event = json.loads((SHARED / "events" / "search_list_documents.json").read_text())
    assert event["rawQueryString"].startswith("limit=20&filter=")
    event["rawQueryString"] = "limit=20&filter=" + quote(json.dumps({"team": "eng", "marker": marker}), safe="")
    response = await invoke_as_lambda("search", event, "search")
    assert response["statusCode"] == 200, response
    assert [d["id"] for d in json.loads(response["body"])["documents"]] == [f"sample-{marker}"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/documents",
            '{"documents": [{"id": "a", "text": "x", "metadata": {"k": NaN}}]}',
            "documents.0.metadata.k",
        ),
        (
            "/v1/documents",
            '{"documents": [{"id": "a", "text": "x", "metadata": {"k": [-Infinity]}}]}',
            "documents.0.metadata",
        ),
        ("/v1/search", '{"query": "x", "mode": "keyword", "filter": {"k": Infinity}}', "filter.k"),
        ("/v1/documents", '{"documents": [{"text": "a", "metadata": {"k": ["\\u0000"]}}]}', "documents.0.metadata.k.0"),
        (
            "/v1/documents",
            '{"documents": [{"text": "a", "metadata": {"k": ' + "[" * 100 + "]" * 100 + "}}]}",
            "documents.0",
        ),
        ("/v1/search", '{"query": "x", "mode": "keyword", "filter": {"k": ' + "[" * 100 + "]" * 100 + "}}", "filter"),
    ],
)
async def test_nan_infinity_nul_and_deep_nesting_in_metadata_or_a_filter_are_a_422_not_a_500(
    api: httpx.AsyncClient, stub: StubProviders, path: str, body: str, field: str
) -> None:
    t = tenant()
    response = await api.post(path, content=body.encode(), headers={"content-type": "application/json", **bearer(t)})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith(field)
    assert stub.calls.total() == 0
