"""`max_requests_per_second` through the crawl API: checked at the door (422), defaulted from
`CRAWL_ORIGIN_MAX_RPS`, enforced by the worker's crawl and recorded in the run's result."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from agent_patterns.config import reset_settings
from tests.conftest import bearer, function_client
from tests.functions.test_crawl_function import Site, run_worker, serve_site


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with serve_site() as served:
        yield served


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with function_client("crawl") as client:
        yield client


@pytest.mark.parametrize("rate", ["0", "-1", "0.01", "101", "1e309", "NaN", '"5"', "true"])
async def test_a_bad_rate_is_a_422_naming_the_field(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site, rate: str
) -> None:
    body = f'{{"url": "{site.base}/", "max_requests_per_second": {rate}}}'
    headers = {**bearer(f"bad{uuid.uuid4().hex[:8]}"), "content-type": "application/json"}
    response = await api.post("/v1/crawls", content=body, headers=headers)
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert message.startswith("max_requests_per_second: ")
    if rate not in ('"5"', "true"):
        assert "must be between 0.05 and 100 requests per second" in message
    assert sent == []


async def test_the_rate_asked_for_or_the_default_reaches_the_crawl_and_is_recorded(
    api: httpx.AsyncClient, sent: list[dict[str, Any]], site: Site, settings_env: pytest.MonkeyPatch
) -> None:
    """The API passes the rate to the worker's engine, which reports the rate it ran at (the
    spacing itself is measured at a site in tests/patterns/test_crawl_politeness.py)."""
    body = {"url": site.base + "/about", "max_pages": 2, "use_sitemap": False, "max_requests_per_second": 2.5}
    asked = (await api.post("/v1/crawls", json=body, headers=bearer())).json()["run_id"]
    assert await run_worker(sent.pop()) == {"batchItemFailures": []}
    report = (await api.get(f"/v1/crawls/{asked}", headers=bearer())).json()
    assert report["request"]["max_requests_per_second"] == 2.5
    assert report["result"]["rate_limit"] == {"max_requests_per_second": 2.5, "requested": 2.5}

    settings_env.setenv("CRAWL_ORIGIN_MAX_RPS", "40")
    reset_settings()
    del body["max_requests_per_second"]
    default = (await api.post("/v1/crawls", json=body, headers=bearer())).json()["run_id"]
    assert await run_worker(sent.pop()) == {"batchItemFailures": []}
    report = (await api.get(f"/v1/crawls/{default}", headers=bearer())).json()
    assert "max_requests_per_second" not in report["request"]
    assert report["result"]["rate_limit"] == {"max_requests_per_second": 40.0, "requested": 40.0}


def test_the_default_rate_setting_is_bounded(settings_env: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from agent_patterns.crawl.settings import CrawlSettings

    assert CrawlSettings().crawl_origin_max_rps == 5.0
    settings_env.setenv("CRAWL_ORIGIN_MAX_RPS", "0")
    with pytest.raises(ValidationError):
        CrawlSettings()
