"""GET /v1/runs (crawl API function): the tenant's runs, newest first, paged and filtered; and
the local gateway sending `/v1/runs` to the crawl function and `/v1/runs/{id}/events` to streaming."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent_patterns.config import reset_settings
from agent_patterns.paging import encode_cursor
from agent_patterns.runs.records import RunStatus, insert_run, update_run
from agent_patterns_dev.gateway import LocalGateway
from tests.conftest import SHARED, bearer, function_client
from tests.functions.conftest import invoke_as_lambda

FIELDS = {"run_id", "kind", "status", "created_at", "updated_at", "error_message"}


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with function_client("crawl") as client:
        yield client


def tenant() -> str:
    return f"r{uuid.uuid4().hex[:10]}"


async def make_runs(t: str, statuses: list[RunStatus], kind: str = "crawl") -> list[str]:
    """Runs in creation order, each moved to its status (an `error` gets a message)."""
    ids = []
    for n, status in enumerate(statuses):
        run_id = await insert_run(t, kind, {"url": f"https://example.com/{n}", "auth": {"password_sealed": "s3cret"}})
        if status != "queued":
            await update_run(t, run_id, status, error_message=f"failed {n}" if status == "error" else None)
        ids.append(run_id)
    return ids


async def pages(api: httpx.AsyncClient, t: str, **params: Any) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.get("/v1/runs", params=query, headers=bearer(t))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"runs", "next_cursor"}
        out.append(body["runs"])
        cursor = body["next_cursor"]
        if cursor is None:
            return out
        assert len(out) < 20, "paging does not end"


STATUSES: list[RunStatus] = ["queued", "running", "complete", "error", "complete"] * 5  # 25 runs


async def test_runs_are_listed_newest_first_each_once_without_the_request(api: httpx.AsyncClient) -> None:
    t = tenant()
    ids = await make_runs(t, STATUSES)
    listed = await pages(api, t, limit=10)
    assert [len(p) for p in listed] == [10, 10, 5]
    runs = [r for p in listed for r in p]
    assert [r["run_id"] for r in runs] == ids[::-1]
    assert all(set(r) == FIELDS for r in runs)  # no request: it may hold sealed secrets
    assert "s3cret" not in json.dumps(runs)
    newest = runs[0]
    assert newest["kind"] == "crawl" and newest["status"] == STATUSES[-1] and newest["error_message"] is None
    assert [r["status"] for r in runs] == STATUSES[::-1]
    default = (await api.get("/v1/runs", headers=bearer(t))).json()
    assert len(default["runs"]) == 20 and default["next_cursor"] is not None  # limit defaults to 20
    assert (await api.get("/v1/runs", headers=bearer(tenant()))).json() == {"runs": [], "next_cursor": None}


async def test_filters_by_status_and_kind_while_paging(api: httpx.AsyncClient) -> None:
    t = tenant()
    ids = await make_runs(t, STATUSES)
    other_kind = await make_runs(t, ["complete", "error"], kind="probe")
    errors = [r for p in await pages(api, t, status="error", limit=2) for r in p]
    newest_first = list(zip(ids[::-1], STATUSES[::-1], strict=True))
    assert [r["run_id"] for r in errors] == [other_kind[1], *(i for i, s in newest_first if s == "error")]
    assert all(r["status"] == "error" and r["error_message"].startswith("failed") for r in errors)
    complete_crawls = [r for p in await pages(api, t, kind="crawl", status="complete", limit=3) for r in p]
    expected = [i for i, s in zip(ids, STATUSES, strict=True) if s == "complete"][::-1]
    assert [r["run_id"] for r in complete_crawls] == expected and len(expected) == 10
    crawls = [r for p in await pages(api, t, kind="crawl", limit=100) for r in p]
    assert len(crawls) == 25 and other_kind[0] not in {r["run_id"] for r in crawls}
    everything = [r for p in await pages(api, t, limit=100) for r in p]
    assert [r["run_id"] for r in everything[:2]] == other_kind[::-1]  # unfiltered: every kind


async def test_a_run_created_while_paging_does_not_shift_the_pages(api: httpx.AsyncClient) -> None:
    t = tenant()
    ids = await make_runs(t, ["complete"] * 5)
    first = (await api.get("/v1/runs", params={"limit": 2}, headers=bearer(t))).json()
    await make_runs(t, ["queued"])  # newer than every page: it belongs before the first
    rest = (await api.get("/v1/runs", params={"limit": 10, "cursor": first["next_cursor"]}, headers=bearer(t))).json()
    assert [r["run_id"] for r in first["runs"] + rest["runs"]] == ids[::-1]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"status": "cancelled"}, "status"),
        ({"status": "ERROR"}, "status"),
        ({"status": "complete\u0000"}, "status"),
        ({"kind": "nope"}, "kind"),
        ({"kind": ""}, "kind"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"cursor": encode_cursor("documents", "doc-1")}, "cursor"),
        ({"cursor": encode_cursor("runs", ["yesterday", str(uuid.uuid4())])}, "cursor"),
        ({"cursor": encode_cursor("runs", ["2026-01-01T00:00:00", str(uuid.uuid4())])}, "cursor"),
        ({"cursor": encode_cursor("runs", ["2026-01-01T00:00:00+00:00", "not-a-uuid"])}, "cursor"),
        ({"cursor": encode_cursor("runs", {"a": 1, "b": 2})}, "cursor"),
        ({"cursor": encode_cursor("runs", None)}, "cursor"),
        ({"cursor": encode_cursor("runs", ["2026-01-01T00:00:00+00:00", 5])}, "cursor"),
        ({"cursor": encode_cursor("runs", ["0001-01-01T00:00:00+01:00", str(uuid.uuid4())])}, "cursor"),
    ],
)
async def test_bad_parameters_are_a_422_naming_them(
    api: httpx.AsyncClient, params: dict[str, Any], fragment: str
) -> None:
    t = tenant()
    await make_runs(t, ["complete"])
    response = await api.get("/v1/runs", params=params, headers=bearer(t))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and fragment in error["message"].split(":")[0], error


async def test_listing_runs_needs_a_tenant(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/runs")).status_code == 401


async def test_the_sample_event_lists_through_mangum_with_the_authorizer_tenant(
    settings_env: pytest.MonkeyPatch,
) -> None:
    """shared/events/runs_list.json (tenant `acme` from the JWT claims, query string) as API Gateway sends it."""

    (newest,) = await make_runs("acme", ["complete"])
    settings_env.setenv("AUTH_MODE", "apigateway")
    reset_settings()
    event = json.loads((SHARED / "events" / "runs_list.json").read_text())
    response = await invoke_as_lambda("crawl", event, "crawl-api")
    assert response["statusCode"] == 200, response
    runs = json.loads(response["body"])["runs"]
    assert runs[0]["run_id"] == newest and all(r["kind"] == "crawl" and r["status"] == "complete" for r in runs)


def test_the_gateway_sends_runs_to_crawl_and_run_events_to_streaming() -> None:
    apps: dict[str, Any] = {name: object() for name in ("llm", "search", "crawl", "streaming")}
    gateway = LocalGateway(apps)
    run_id = str(uuid.uuid4())
    expected = {
        "/v1/runs": "crawl",
        f"/v1/runs/{run_id}/events": "streaming",
        "/v1/runs/": "streaming",
        f"/runs/{run_id}": "streaming",
        f"/v1/crawls/{run_id}": "crawl",
        "/v1/documents": "search",
        "/v1/documents/https://x.example/a/b": "search",
    }
    for path, name in expected.items():
        target = gateway._target(path)
        assert target is not None and target[0] is apps[name], path
