"""Who may watch a run's event stream, and what a (re)connecting client should get.

A stream opens with the run's short-lived stream token (`?token=`, because EventSource cannot
set headers) or with a bearer token of the run's tenant. Another run's or tenant's token is a
403, an expired one a 401, an unknown run a 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from agent_patterns.config import get_settings
from agent_patterns.errors import ForbiddenError, NotFoundError, UnauthorizedError
from agent_patterns.runs.events import RunEvent, check_event_id, replay, run_owner, stream_key
from agent_patterns.runs.records import TERMINAL_STATUSES, get_run, parse_run_id
from agent_patterns.streaming.settings import streaming_settings
from agent_patterns.tenancy import Tenant, bearer_token, tenant, verify, verify_idp_token


def _tenant_of(token: str, run_id: str, from_query: bool) -> Tenant:
    settings = get_settings()
    if not from_query and settings.effective_auth_mode == "apigateway":
        return verify_idp_token(token, settings)
    claims = verify(token, settings=settings)
    kind = claims.get("kind")
    if kind == "stream":
        if claims.get("run_id") != run_id:
            raise ForbiddenError("this stream token belongs to another run")
    elif kind != "bearer" or settings.effective_auth_mode != "local":
        raise UnauthorizedError("invalid token")
    return tenant(str(claims.get("tenant_id")))


async def authorize(run_id: str, headers: Mapping[str, str], query_token: str | None) -> Tenant:
    """The tenant allowed to read `run_id`'s stream, or the matching 401/403/404 error."""
    rid = parse_run_id(run_id)
    header_token = bearer_token(headers)
    token = query_token or header_token
    if not token:
        raise UnauthorizedError("missing token: pass the run's stream token as ?token= or a bearer token")
    who = _tenant_of(token, rid, from_query=query_token is not None)
    owner = await run_owner(rid)
    if owner is None:
        if await get_run(who.id, rid) is None:
            raise NotFoundError(f"run {rid} not found")
        return who  # a known run whose events have expired: the stream will be empty
    if owner != who.id:
        raise ForbiddenError("this run belongs to another tenant")
    return who


async def finished_with_nothing_left(run_id: str, after: str | None) -> bool:
    """True when the run has ended and the client has every event: answer 204, stop reconnecting.

    A malformed `after` is refused here (422), before any stream starts."""
    from agent_patterns.backends import get_redis

    if after is not None:
        check_event_id(after)
    last: list[Any] = await get_redis().xrevrange(stream_key(run_id), count=1)  # type: ignore[assignment]
    if not last:
        return True  # expired (or never had events): nothing will ever come
    if last[0][1].get("type") not in TERMINAL_STATUSES:
        return False
    return after is not None and not await replay(run_id, after=after, count=1)


def stream_events(run_id: str, after: str | None) -> AsyncIterator[RunEvent]:
    from agent_patterns.streaming.feeds import subscribe

    return subscribe(run_id, after)


def stream_limits() -> tuple[float, float, int]:
    """Heartbeat interval, maximum stream duration, and the reconnect hint for clients."""
    settings = streaming_settings()
    return settings.sse_heartbeat_seconds, settings.sse_max_stream_seconds, settings.sse_retry_ms
