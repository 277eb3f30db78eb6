"""Generated requests against every route of the four functions (schemathesis, from each app's
OpenAPI document): whatever the body, query or path holds (NUL bytes, lone surrogates, huge
numbers, wrong types, unknown fields), the answer is never a 5xx, and every 4xx is our error
shape. Deterministic (derandomized), so a failure reproduces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from agent_patterns.tenancy import issue_token
from agent_patterns.web import ErrorBody
from agent_patterns_dev.gateway import load_function
from tests.conftest import LiveServer, captured_crawl_jobs

FUNCTIONS = ("llm", "search", "crawl", "streaming")
EXAMPLES = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def gateway() -> Iterator[LiveServer]:
    from agent_patterns_dev.gateway import build_gateway

    with LiveServer(build_gateway()) as live:
        yield live


@pytest.fixture
def quiet_crawls(settings_env: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Crawl jobs captured, not run: the fuzzer's URLs are not ours to visit."""
    with captured_crawl_jobs(settings_env) as jobs:
        yield jobs


def _schema(function: str) -> Any:
    return schemathesis.openapi.from_dict(load_function(function).app.openapi())


def check(case: Any, gateway: LiveServer) -> None:
    response = case.call(base_url=gateway.url, headers={"Authorization": f"Bearer {issue_token('fuzz')}"}, timeout=30)
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:500])
    if response.status_code >= 400:
        ErrorBody.model_validate(response.json())


llm = _schema("llm")
search = _schema("search")
crawl = _schema("crawl")
streaming = _schema("streaming")


@llm.parametrize()  # type: ignore[untyped-decorator]
@EXAMPLES
def test_llm_never_answers_5xx(case: Any, gateway: LiveServer, stub: Any) -> None:
    check(case, gateway)


@search.parametrize()  # type: ignore[untyped-decorator]
@EXAMPLES
def test_search_never_answers_5xx(case: Any, gateway: LiveServer, stub: Any) -> None:
    check(case, gateway)


@crawl.parametrize()  # type: ignore[untyped-decorator]
@EXAMPLES
def test_crawl_never_answers_5xx(case: Any, gateway: LiveServer, quiet_crawls: list[dict[str, Any]]) -> None:
    check(case, gateway)


@streaming.parametrize()  # type: ignore[untyped-decorator]
@EXAMPLES
def test_streaming_never_answers_5xx(case: Any, gateway: LiveServer) -> None:
    check(case, gateway)
