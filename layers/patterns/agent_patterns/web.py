"""One way to build each function's FastAPI app and its Lambda handler.

Every app gets the same error shape (`{"error": {"code", "message"}}` with the right status),
a correlation id in every log line and response, `/healthz` with each backend's state, and
`/livez` (process liveness only, for the Lambda Web Adapter's readiness check).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_patterns.config import get_settings, on_lambda
from agent_patterns.errors import HTTP_ERROR_CODES, AgentPatternsError, BackendUnavailableError
from agent_patterns.observability import logger
from agent_patterns.tenancy import Tenant, operator_from_request, tenant_from_request

Backend = Literal["redis", "postgres"]
HEALTH_TIMEOUT_S = 2.0


_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable (agent_patterns.errors.HTTP_ERROR_CODES)")
    message: str = Field(description="what went wrong and what to fix")
    type: str = Field(description="OpenAI's error type, so OpenAI clients read it as their own")
    param: str | None = Field(None, description="the field at fault, when one is")


class ErrorBody(BaseModel):
    """Every error's body, whatever the route."""

    error: ErrorDetail


# Documented on every route (the OpenAPI document), so generated clients know the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "malformed request (the body is not valid JSON: the message says where; a bad header)"),
        (401, "no valid bearer token"),
        (403, "the token may not do this"),
        (404, "no such resource for this tenant"),
        (413, "body over MAX_REQUEST_BYTES"),
        (415, "a body sent without content-type: application/json"),
        (422, "a field is missing, unknown or invalid: the message names it"),
        (429, "a rate limit or budget is reached (Retry-After)"),
        (503, "a backend or provider is unavailable (Retry-After)"),
    )
}
# A route that answers Server-Sent Events when asked to stream.
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or with `stream: true` Server-Sent Events (`data: {chunk}` lines, then `data: [DONE]`)",
        "content": {"text/event-stream": {}},
    }
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, param: str | None = None
) -> JSONResponse:
    """The error body every route answers: OpenAI's shape (`type`, `param`), so OpenAI clients
    read our errors as their own, plus a stable `code`."""
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"code": code, "message": message, "type": kind, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


_TYPE_NAMES = frozenset({"str", "bool", "int", "float", "list", "dict", "none", "bytes", "decimal"})


def _is_union_member(part: Any) -> bool:
    """A location step pydantic adds to name a union's alternative (`bool`, `constrained-str`,
    `list[tagged-union[TextPart,ImagePart]]`, `TextPart`), not a field the caller wrote: our
    fields are snake_case words."""
    return isinstance(part, str) and (part in _TYPE_NAMES or part[:1].isupper() or not part.isidentifier())


def _field_errors(exc: RequestValidationError) -> list[tuple[str, str]]:
    """(field path, reason) per error, as the caller wrote the body: union alternatives are
    folded into one reason at the field, and an alternative whose type did not match at all
    is dropped when another got further (a list given for `str | list[Part]` is about the list)."""
    found: list[tuple[str, str, bool, bool]] = []  # path, reason, type mismatch, inside a union
    for err in exc.errors():
        loc = [p for p in err.get("loc", ()) if p != "body"]
        steps = [str(p) for p in loc if not _is_union_member(p)]
        in_union = len(steps) != len(loc)
        reason = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if not steps and err.get("type") in ("model_type", "model_attributes_type", "dict_type"):
            reason = f"must be a JSON object, not {_json_kind(err.get('input'))}"
        elif err.get("type") == "union_tag_invalid" and (ctx := err.get("ctx")):  # name the tag's field
            steps.append(str(ctx["discriminator"]).strip("'"))
            reason = f"{ctx['tag']!r} is not one of {ctx['expected_tags']}"
        mismatch = str(err.get("type", "")).endswith("_type")
        found.append((".".join(steps), reason, mismatch, in_union))
    further = [(path, mismatch) for path, _, mismatch, in_union in found if in_union]

    def superseded(path: str) -> bool:  # another alternative got inside `path`, or matched its type
        return any(p != path or not m for p, m in further if (p + ".").startswith(path + "."))

    merged: dict[str, list[str]] = {}
    for path, reason, mismatch, in_union in found:
        if not (in_union and mismatch and superseded(path)):
            merged.setdefault(path, []).append(reason)
    return [(path, " or ".join(_alternatives(reasons))) for path, reasons in merged.items()]


def _json_kind(value: Any) -> str:
    kinds = ((list, "an array"), (str, "a string"), (bool, "a boolean"), (int | float, "a number"))
    return next((name for kind, name in kinds if isinstance(value, kind)), "null" if value is None else "that")


def _alternatives(reasons: list[str]) -> list[str]:
    """`Input should be a valid boolean or a valid string`, not the phrase twice."""
    lead = "Input should be "
    return [r.removeprefix(lead) if n and r.startswith(lead) else r for n, r in enumerate(dict.fromkeys(reasons))]


def _validation_message(fields: list[tuple[str, str]]) -> str:
    parts = [reason if not path and field_named(reason) else f"{path or 'body'}: {reason}" for path, reason in fields]
    return "; ".join(parts) or "invalid request"


_FIELD = re.compile(r"([A-Za-z_]\w*(?:\.\w+)*): ")


def _json_error(exc: RequestValidationError) -> str:
    """Where the JSON broke, as line and column, with the parser's reason."""
    err = next(e for e in exc.errors() if e.get("type") == "json_invalid")
    doc, pos = exc.body if isinstance(exc.body, str) else "", err["loc"][-1]
    reason = (err.get("ctx") or {}).get("error", "JSON decode error")
    if not isinstance(pos, int):
        return f"the body is not valid JSON: {reason}"
    line = doc.count("\n", 0, pos) + 1
    column = pos - (doc.rfind("\n", 0, pos) + 1) + 1
    return f"the body is not valid JSON: {reason} at line {line}, column {column}"


def field_named(message: str) -> str | None:
    """The field a message starts by naming (`urls.0: ...`), for the error's `param`."""
    found = _FIELD.match(message)
    return found.group(1) if found else None


def method_not_allowed(method: str, allowed: Iterable[str]) -> JSONResponse:
    """A 405 that names the methods the path serves, in the message and in `Allow`."""
    methods = ", ".join(allowed)
    return error_response(
        405, HTTP_ERROR_CODES[405], f"{method} is not allowed here: use {methods}", {"Allow": methods}
    )


def install_error_handlers(app: FastAPI) -> None:
    async def on_app_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AgentPatternsError)
        if exc.status_code >= 500:
            logger.warning("request failed", extra={"error_code": exc.code, "error": exc.message})
        param = field_named(exc.message) if exc.status_code == 422 else None
        return error_response(exc.status_code, exc.code, exc.message, exc.headers, param=param)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, HTTP_ERROR_CODES[400], _json_error(exc))
        if any(tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes) for e in errors):
            # FastAPI reads a body as JSON only when its content-type says so (curl -d sends a form type)
            sent = request.headers.get("content-type") or "none"
            return error_response(
                415,
                HTTP_ERROR_CODES[415],
                f"the body must be JSON sent with content-type: application/json (content-type was {sent})",
            )
        fields = _field_errors(exc)
        message = _validation_message(fields)
        path, reason = fields[0] if fields else ("", "")
        return error_response(422, "invalid_input", message, param=path or field_named(reason))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        message = str(exc.detail)
        if exc.status_code == 405:  # Starlette names the first route's methods only: name them all
            return method_not_allowed(request.method, _allowed_methods(app, request))
        return error_response(exc.status_code, code, message, headers)

    app.add_exception_handler(AgentPatternsError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at this path."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


class BodyLimitMiddleware:
    """A 413 for a request body over `MAX_REQUEST_BYTES`, before it is read whole: by its
    Content-Length when it has one, else as soon as the chunks received pass the limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def _message(size: str, limit: int) -> str:
        return f"request body of {size} bytes is over the limit of {limit} bytes (MAX_REQUEST_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = get_settings().max_request_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await error_response(413, "payload_too_large", self._message(value.decode(), limit))(
                    scope, receive, send
                )
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # an HTTPException: FastAPI passes it to the handlers
                    raise StarletteHTTPException(413, self._message(f"more than {limit}", limit))
            return message

        await self.app(scope, counting_receive, send)


class RequestContextMiddleware:
    """Correlation id per request (header, API Gateway request id, or new), a 503 for a Redis
    outage wherever it surfaces, and a last-resort 500.

    Pure ASGI rather than BaseHTTPMiddleware so streaming responses pass through unbuffered.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        aws_ctx = (scope.get("aws.event") or {}).get("requestContext") or {}
        cid = headers.get("x-request-id") or headers.get("x-correlation-id") or aws_ctx.get("requestId")
        cid = (cid or uuid.uuid4().hex)[:128]
        logger.set_correlation_id(cid)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", cid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            from agent_patterns.backends.redis import is_redis_unavailable

            if is_redis_unavailable(exc) and not started:  # an outage, not a bug: retry later
                logger.warning("Redis unavailable", extra={"path": scope.get("path"), "error": str(exc)})
                unavailable = BackendUnavailableError(f"Redis is unavailable: {str(exc).splitlines()[0][:200]}")
                response = error_response(503, unavailable.code, unavailable.message, unavailable.headers)
                await response(scope, receive, send_with_id)
                return
            logger.exception("unhandled error", extra={"path": scope.get("path")})
            if started:
                raise
            response = error_response(500, "internal_error", f"internal error (request id {cid})")
            await response(scope, receive, send_with_id)


async def _probe(backend: Backend) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        if backend == "redis":
            from agent_patterns.backends import get_redis

            await asyncio.wait_for(get_redis().ping(), HEALTH_TIMEOUT_S)
        else:
            from agent_patterns.backends import connection

            async def select_one() -> None:
                async with connection() as db:
                    await db.execute("SELECT 1")

            await asyncio.wait_for(select_one(), HEALTH_TIMEOUT_S)
    except Exception as exc:  # a health check reports every failure, it never raises
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return {"status": "error", "error": message.splitlines()[0][:300]}
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


async def backend_health(backends: Iterable[Backend]) -> tuple[bool, dict[str, Any]]:
    names = list(backends)
    results = await asyncio.gather(*(_probe(b) for b in names))
    state = dict(zip(names, results, strict=True))
    return all(r["status"] == "ok" for r in results), state


def create_app(function: str, *, backends: Iterable[Backend] = ("redis", "postgres")) -> FastAPI:
    """The FastAPI app of one function, with the shared error handling and health routes."""
    from agent_patterns import __version__

    names = tuple(backends)
    if on_lambda():  # fail the INIT phase with a message naming the variable, not the first request
        for backend in names:
            get_settings().url_for(backend)
    app = FastAPI(
        title=f"agent-patterns {function}",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        responses=ERROR_RESPONSES,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestContextMiddleware)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        ok, state = await backend_health(names)
        body = {"function": function, "status": "ok" if ok else "degraded", "backends": state}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/livez", include_in_schema=False)
    async def livez() -> dict[str, str]:
        return {"function": function, "status": "ok"}

    return app


async def current_tenant(request: Request) -> Tenant:
    return tenant_from_request(request.headers, request.scope.get("aws.event"))


CurrentTenant = Annotated[Tenant, Depends(current_tenant)]


async def current_operator(request: Request) -> str:
    return operator_from_request(request.headers, request.scope.get("aws.event"))


CurrentOperator = Annotated[str, Depends(current_operator)]


def lambda_handler(app: FastAPI) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Lambda entry point for an API Gateway (HTTP API) function: Mangum plus Powertools."""
    from aws_lambda_powertools.logging import correlation_paths
    from mangum import Mangum

    from agent_patterns.observability import metrics

    adapter = Mangum(app, lifespan="off")

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        result: dict[str, Any] = adapter(event, context)
        return result

    with_metrics = metrics.log_metrics(handler, capture_cold_start_metric=True)
    wrapped: Callable[[dict[str, Any], Any], dict[str, Any]] = logger.inject_lambda_context(
        with_metrics, correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
    )
    return wrapped
