"""Credentials in a crawl URL (`http://user:pw@host/`) are used (as HTTP credentials for that
origin) and never echoed: not in the stored request, the report, the pages or the events."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent_patterns.runs import events, get_run
from tests.conftest import LiveServer, bearer, function_client
from tests.crawl_site import page
from tests.functions.test_crawl_function import Site, run_worker

USER, PASSWORD = "crawler", "s3cret-Pa55"


def basic_auth_site() -> Starlette:
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    async def guarded(request: Request) -> Response:
        if request.headers.get("authorization") != expected:
            return Response("who are you", status_code=401, headers={"WWW-Authenticate": 'Basic realm="test"'})
        n = int(request.path_params.get("n", 0))
        return page(f"Private {n}", f'<a href="/p/{n + 1}">next</a>')

    return Starlette(routes=[Route("/", guarded), Route("/p/{n:int}", guarded)])


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with LiveServer(basic_auth_site()) as live:
        yield Site(live.url, Counter(), f"127.0.0.1:{live.port}")


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with function_client("crawl") as client:
        yield client


async def test_url_credentials_are_used_and_never_shown(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site
) -> None:
    url = f"http://{USER}:{PASSWORD}@{site.host}/"
    started = await api.post("/v1/crawls", json={"url": url, "max_pages": 3}, headers=bearer())
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    assert await run_worker(sent.pop()) == {"batchItemFailures": []}
    report = (await api.get(f"/v1/crawls/{run_id}", headers=bearer())).json()
    assert report["status"] == "complete", report
    assert [p["status"] for p in report["pages"]] == [200, 200, 200]  # the credentials were sent
    record = await get_run("acme", run_id)
    assert record is not None
    everything = json.dumps([report, record.request, [e.payload for e in await events.replay(run_id)]])
    assert PASSWORD not in everything and f"{USER}:" not in everything
    assert report["request"]["url"] == f"{site.base}/"
