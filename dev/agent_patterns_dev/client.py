"""A small client of the HTTP API for the `agent-patterns` command: starts runs, follows their
SSE streams (resuming with Last-Event-ID after any drop, as a browser does)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from agent_patterns.runs.records import TERMINAL_STATUSES
from agent_patterns_dev.settings import dev_settings


@dataclass(frozen=True)
class StreamEvent:
    id: str | None
    type: str
    payload: dict[str, Any]


TIMEOUT_S = 30.0
"""Seconds one plain request may take (ingest allows more); tests shorten it."""


class ApiError(Exception):
    """An error answer of the API, as one line: the CLI prints it as is, never a traceback."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {' '.join(str(message).split())}")
        self.status = status


class ApiUnreachableError(ApiError):
    """No HTTP answer at all (refused, timed out, a malformed URL): most often the dev server is not running."""

    def __init__(self, api: str, reason: str) -> None:
        Exception.__init__(
            self, f"cannot reach the API at {api}: {reason}; is the dev server running (`agent-patterns dev`)?"
        )
        self.status = 0


def _reason(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__


@contextmanager
def _reaching(api: str) -> Iterator[None]:
    """Every call goes through here, so a transport failure is one ApiUnreachableError in every command."""
    try:
        yield
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        raise ApiUnreachableError(api, _reason(exc)) from exc


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300] or response.reason_phrase
    raise ApiError(response.status_code, message)


def _json(response: httpx.Response, api: str) -> dict[str, Any]:
    """The answer's JSON object; anything else means --api names something other than this API."""
    try:
        result = response.json()
    except ValueError:
        result = None
    if not isinstance(result, dict):
        raise ApiError(response.status_code, f"the answer is not a JSON object: is {api} the agent-patterns API?")
    return result


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _request(
    method: str, api: str, path: str, token: str | None, *, timeout: float | None = None, **kwargs: Any
) -> dict[str, Any]:
    """One call of the API and its JSON answer; ApiError for an error answer and for no answer at all."""
    api = api.rstrip("/")
    with _reaching(api):
        response = httpx.request(method, f"{api}{path}", headers=_auth(token), timeout=timeout or TIMEOUT_S, **kwargs)
    _raise_for(response)
    return _json(response, api)


def resolve_token(token: str | None, tenant: str | None) -> str | None:
    """An explicit token, AGENT_PATTERNS_TOKEN, or (local server only) a token minted for `tenant`.

    A tenant given is checked even when a token wins, so a typo is never silently ignored."""
    from agent_patterns.tenancy import validate_tenant_id

    if tenant is not None:
        validate_tenant_id(tenant)
    if token:
        return token
    settings = dev_settings()
    if settings.token is not None:
        return settings.token.get_secret_value()
    if tenant:
        from agent_patterns.tenancy import issue_token
        from agent_patterns_dev.environment import export_auth_secret

        export_auth_secret(settings.data_dir)
        return issue_token(tenant)
    return None


def follow_events(
    api: str,
    run_id: str,
    token: str | None,
    *,
    after: str | None = None,
    max_reconnects: int = 50,
    events_url: str | None = None,
) -> Iterator[StreamEvent]:
    """Every event of the run from `after` on, once each; heartbeats are skipped. Ends after a
    terminal event, or when the server says there is nothing more (204). A stream that drops is
    resumed, but a server that never answered is reported at once (it is not coming back)."""
    last_id = after
    retry_s = 1.0
    reconnects = 0
    answered = False
    params = {"token": token} if token else {}
    url = events_url or f"{api.rstrip('/')}/v1/runs/{run_id}/events"
    with httpx.Client(timeout=httpx.Timeout(10, read=60)) as http:
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with http.stream("GET", url, params=params, headers=headers) as r:
                    answered = True
                    if r.status_code == 204:
                        return
                    if r.status_code >= 400:
                        r.read()
                        _raise_for(r)
                    event_id: str | None = None
                    data: str | None = None
                    for line in r.iter_lines():
                        if line:
                            name, _, value = line.partition(":")
                            value = value.removeprefix(" ")
                            if name == "id":
                                event_id = value
                            elif name == "data":
                                data = value
                            elif name == "retry" and value.isdigit():
                                retry_s = int(value) / 1000
                            continue
                        if data is not None:
                            message = json.loads(data)
                            if message.get("type") != "heartbeat":
                                if event_id:
                                    last_id = event_id
                                yield StreamEvent(event_id, message["type"], message.get("payload") or {})
                                if message["type"] in TERMINAL_STATUSES:
                                    return
                        event_id, data = None, None
            except (httpx.TransportError, httpx.InvalidURL) as exc:
                if not answered:
                    raise ApiUnreachableError(events_url or api, _reason(exc)) from exc
            reconnects += 1
            if reconnects > max_reconnects:
                raise ApiUnreachableError(
                    events_url or api, f"the stream of run {run_id} dropped {max_reconnects} times"
                )
            time.sleep(retry_s)


def start_crawl(api: str, token: str | None, url: str, max_pages: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url}
    if max_pages is not None:
        body["max_pages"] = max_pages
    return _request("POST", api, "/v1/crawls", token, json=body)


def get_crawl(api: str, token: str | None, run_id: str) -> dict[str, Any]:
    return _request("GET", api, f"/v1/crawls/{run_id}", token)


def cancel_crawl(api: str, token: str | None, run_id: str) -> dict[str, Any]:
    return _request("POST", api, f"/v1/crawls/{run_id}/cancel", token)


def get_usage(api: str, token: str | None, params: dict[str, str]) -> dict[str, Any]:
    return _request("GET", api, "/v1/usage", token, params=params)


def get_limits(api: str, token: str | None, tenant_id: str) -> dict[str, Any]:
    return _request("GET", api, f"/v1/admin/tenants/{tenant_id}/limits", token)


def set_limits(api: str, token: str | None, tenant_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    return _request("PUT", api, f"/v1/admin/tenants/{tenant_id}/limits", token, json=changes)


def operator_token(token: str | None) -> str | None:
    """An explicit token, AGENT_PATTERNS_TOKEN, or (local server only) an operator token."""
    if token:
        return token
    settings = dev_settings()
    if settings.token is not None:
        return settings.token.get_secret_value()
    from agent_patterns.tenancy import issue_operator_token
    from agent_patterns_dev.environment import export_auth_secret

    export_auth_secret(settings.data_dir)
    return issue_operator_token("local-operator")


def ingest_documents(api: str, token: str | None, documents: list[dict[str, Any]]) -> dict[str, Any]:
    return _request("POST", api, "/v1/documents", token, json={"documents": documents}, timeout=4 * TIMEOUT_S)


def search_documents(api: str, token: str | None, body: dict[str, Any]) -> dict[str, Any]:
    return _request("POST", api, "/v1/search", token, json=body, timeout=2 * TIMEOUT_S)


def ask_stream(api: str, token: str | None, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The chunks of a streamed answer (the OpenAI chunk shape; the last one carries citations)."""
    api = api.rstrip("/")
    with (
        _reaching(api),
        httpx.Client(timeout=httpx.Timeout(10, read=120)) as http,
        http.stream("POST", f"{api}/v1/answer", json={**body, "stream": True}, headers=_auth(token)) as r,
    ):
        if r.status_code >= 400:
            r.read()
            _raise_for(r)
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk: dict[str, Any] = json.loads(line[6:])
                if "error" in chunk:
                    raise ApiError(502, chunk["error"].get("message", "the answer stream failed"))
                yield chunk
