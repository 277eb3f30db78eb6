"""A small client of the HTTP API for the `agent-patterns` command: starts runs, follows their
SSE streams (resuming with Last-Event-ID after any drop, as a browser does)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
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


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300] or response.reason_phrase
    raise ApiError(response.status_code, message)


def resolve_token(token: str | None, tenant: str | None) -> str | None:
    """An explicit token, AGENT_PATTERNS_TOKEN, or (local server only) a token minted for `tenant`."""
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
    terminal event, or when the server says there is nothing more (204)."""
    last_id = after
    retry_s = 1.0
    reconnects = 0
    params = {"token": token} if token else {}
    with httpx.Client(timeout=httpx.Timeout(10, read=60)) as http:
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                url = events_url or f"{api}/v1/runs/{run_id}/events"
                with http.stream("GET", url, params=params, headers=headers) as r:
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
            except httpx.TransportError:
                pass
            reconnects += 1
            if reconnects > max_reconnects:
                raise ApiError(0, f"stream of run {run_id} dropped {max_reconnects} times; giving up")
            time.sleep(retry_s)


def start_crawl(api: str, token: str | None, url: str, max_pages: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url}
    if max_pages is not None:
        body["max_pages"] = max_pages
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(f"{api}/v1/crawls", json=body, headers=headers, timeout=30)
    _raise_for(response)
    result: dict[str, Any] = response.json()
    return result


def get_crawl(api: str, token: str | None, run_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{api}/v1/crawls/{run_id}", headers=headers, timeout=30)
    _raise_for(response)
    result: dict[str, Any] = response.json()
    return result


def cancel_crawl(api: str, token: str | None, run_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(f"{api}/v1/crawls/{run_id}/cancel", headers=headers, timeout=30)
    _raise_for(response)
    result: dict[str, Any] = response.json()
    return result


def _get(api: str, token: str | None, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{api}{path}", headers=headers, params=params, timeout=30)
    _raise_for(response)
    result: dict[str, Any] = response.json()
    return result


def get_usage(api: str, token: str | None, params: dict[str, str]) -> dict[str, Any]:
    return _get(api, token, "/v1/usage", params)


def get_limits(api: str, token: str | None, tenant_id: str) -> dict[str, Any]:
    return _get(api, token, f"/v1/admin/tenants/{tenant_id}/limits")


def set_limits(api: str, token: str | None, tenant_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.put(f"{api}/v1/admin/tenants/{tenant_id}/limits", headers=headers, json=changes, timeout=30)
    _raise_for(response)
    result: dict[str, Any] = response.json()
    return result


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


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def ingest_documents(api: str, token: str | None, documents: list[dict[str, Any]]) -> dict[str, Any]:
    response = httpx.post(f"{api}/v1/documents", json={"documents": documents}, headers=_auth(token), timeout=120)
    _raise_for(response)
    result: dict[str, Any] = response.json()
    return result


def search_documents(api: str, token: str | None, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{api}/v1/search", json=body, headers=_auth(token), timeout=60)
    _raise_for(response)
    result: dict[str, Any] = response.json()
    return result


def ask_stream(api: str, token: str | None, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The chunks of a streamed answer (the OpenAI chunk shape; the last one carries citations)."""
    import json

    with (
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
