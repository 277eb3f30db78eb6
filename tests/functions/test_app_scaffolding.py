"""The shared app scaffolding: error shape, correlation ids, health, and the Mangum handler."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from mangum.types import LambdaCognitoIdentity, LambdaMobileClientContext
from pydantic import BaseModel, Field

from agent_patterns import errors
from agent_patterns.tenancy import issue_token
from agent_patterns.web import CurrentTenant, create_app
from agent_patterns_dev.gateway import load_function
from tests.conftest import SHARED, bearer, function_client


class Body(BaseModel):
    prompt: str = Field(min_length=1)
    max_tokens: int = Field(gt=0)


def build_test_app() -> FastAPI:
    app = create_app("test")

    @app.get("/raise/{name}")
    async def raise_error(name: str) -> None:
        raise getattr(errors, name)(f"{name} happened")

    @app.get("/unavailable/{seconds}")
    async def unavailable(seconds: int) -> None:
        raise errors.BackendUnavailableError("Redis is down", retry_after=seconds)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @app.post("/echo")
    async def echo(body: Body, who: CurrentTenant) -> dict[str, Any]:
        return {"tenant": who.id, "prompt": body.prompt}

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_test_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("BadRequestError", 400, "bad_request"),
        ("UnauthorizedError", 401, "unauthorized"),
        ("ForbiddenError", 403, "forbidden"),
        ("NotFoundError", 404, "not_found"),
        ("ConflictError", 409, "conflict"),
        ("PayloadTooLargeError", 413, "payload_too_large"),
        ("ValidationError", 422, "invalid_input"),
        ("RateLimitedError", 429, "rate_limited"),
        ("BackendUnavailableError", 503, "backend_unavailable"),
        ("ConfigurationError", 503, "configuration_error"),
    ],
)
async def test_each_error_maps_to_its_status_and_code(
    client: httpx.AsyncClient, name: str, status: int, code: str
) -> None:
    response = await client.get(f"/raise/{name}")
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["message"]) == (code, f"{name} happened")
    assert error["type"] and "param" in error  # OpenAI's error shape too


async def test_backend_unavailable_says_when_to_retry(client: httpx.AsyncClient) -> None:
    response = await client.get("/raise/BackendUnavailableError")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"  # the default
    for seconds in (1, 17, 120):  # the value the raiser chose, not a constant
        response = await client.get(f"/unavailable/{seconds}")
        assert response.status_code == 503 and response.headers["retry-after"] == str(seconds)
        error = response.json()["error"]
        assert (error["code"], error["message"], error["type"]) == (
            "backend_unavailable",
            "Redis is down",
            "server_error",
        )
    assert "retry-after" not in (await client.get("/raise/NotFoundError")).headers


async def test_invalid_body_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    token = issue_token("acme")
    response = await client.post(
        "/echo", json={"prompt": "", "max_tokens": -1}, headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "prompt" in message and "max_tokens" in message


async def test_tenant_comes_from_the_token_never_from_the_body(client: httpx.AsyncClient) -> None:
    token = issue_token("acme")
    response = await client.post(
        "/echo",
        json={"prompt": "hi", "max_tokens": 5, "tenant_id": "globex"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200 and response.json()["tenant"] == "acme"
    assert (await client.post("/echo", json={"prompt": "hi", "max_tokens": 5})).status_code == 401


async def test_unknown_route_and_method_use_the_error_shape(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = await client.delete("/boom")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


async def test_a_wrong_method_names_every_method_the_path_serves() -> None:
    """Starlette's 405 names only the first matching route's methods; /v1/documents is served
    by two routes (GET lists, POST ingests), and the answer must name both."""
    async with function_client("search") as api:
        wrong = await api.request("PATCH", "/v1/documents", headers=bearer("acme"))
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, POST" and "GET, POST" in wrong.json()["error"]["message"]


async def test_unhandled_errors_are_500_without_internals_and_with_the_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom", headers={"x-request-id": "req-123"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-123"
    assert "secret internals" not in response.text and "req-123" in response.json()["error"]["message"]


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/livez")
    assert len(response.headers["x-request-id"]) >= 16


async def test_healthz_reports_each_backend(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and set(body["backends"]) == {"redis", "postgres"}
    assert all(b["status"] == "ok" for b in body["backends"].values())


async def test_healthz_is_503_when_a_backend_is_down(settings_env: pytest.MonkeyPatch) -> None:
    from agent_patterns.backends import reset_redis

    settings_env.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    settings_env.setenv("REDIS_CONNECT_TIMEOUT", "0.5")
    reset_redis()
    transport = httpx.ASGITransport(app=build_test_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        response = await c.get("/healthz")
    reset_redis()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["backends"]["redis"]["status"] == "error" and body["backends"]["postgres"]["status"] == "ok"


class LambdaContext:
    function_name = "agent-patterns-llm"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:agent-patterns-llm"
    memory_limit_in_mb = 512
    aws_request_id = "7c1d9a3e-1111-2222-3333-444455556666"
    log_group_name = "/aws/lambda/agent-patterns-llm"
    log_stream_name = "stream"
    identity: LambdaCognitoIdentity | None = None
    client_context: LambdaMobileClientContext | None = None

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def test_mangum_handler_serves_sample_events() -> None:
    """The handler runs the app for API Gateway HTTP API events, as `sam local invoke -e` would."""
    handler = load_function("llm").handler
    health = handler(json.loads((SHARED / "events" / "apigw_healthz.json").read_text()), LambdaContext())
    assert health["statusCode"] == 200
    assert json.loads(health["body"])["function"] == "llm"
    assert health["headers"]["x-request-id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"


def test_apigateway_claims_reach_the_route_through_mangum(settings_env: pytest.MonkeyPatch) -> None:
    from mangum import Mangum

    settings_env.setenv("AUTH_MODE", "apigateway")
    from agent_patterns.config import reset_settings

    reset_settings()
    event = json.loads((SHARED / "events" / "llm_complete.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/echo"
    event["body"] = json.dumps({"prompt": "hi", "max_tokens": 3, "tenant_id": "globex"})
    response = Mangum(build_test_app(), lifespan="off")(event, LambdaContext())
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["tenant"] == "acme"


@pytest.mark.parametrize("function", ["llm", "search", "crawl", "streaming"])
async def test_the_openapi_document_describes_the_error_shape_every_route_answers(function: str) -> None:
    """Generated clients learn the error body from the document; the body they get matches it."""
    from agent_patterns.web import ErrorBody

    app = load_function(function).app
    doc = app.openapi()
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            for status in ("401", "422", "503"):
                ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), (path, method, status)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        first = next(iter(doc["paths"]))
        unauthenticated = await c.request(next(iter(doc["paths"][first])).upper(), first)
    assert unauthenticated.status_code in (401, 405, 422)
    ErrorBody.model_validate(unauthenticated.json())


async def test_streaming_routes_document_server_sent_events() -> None:
    doc = load_function("llm").app.openapi()
    for path in ("/v1/chat/completions", "/v1/answer"):
        assert "text/event-stream" in doc["paths"][path]["post"]["responses"]["200"]["content"], path
