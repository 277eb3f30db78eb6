"""One webhook delivery per message: sign (Standard Webhooks), POST once, and on failure queue
the next attempt with a delay, or dead-letter it after WEBHOOK_MAX_ATTEMPTS.

A message is `{"kind": "webhook", "event_id", "tenant_id", "url", "attempt"}`. The body is the
event's, kept in the tenant's schema, so every attempt sends the same bytes with the same
`webhook-id`; `webhook-timestamp` is the attempt's and the signature covers both. Redis
remembers, per event and endpoint, a 2xx (`…:delivered`, WEBHOOK_DELIVERED_TTL_SECONDS) and the
attempt in hand (`…:attempt`): a redelivered message, or a stray copy of an attempt already
made, sends nothing. Secrets and signatures are never logged; endpoints are logged by origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpcore2
from pydantic import BaseModel, Field, field_validator

from agent_patterns.backends import get_redis
from agent_patterns.backends.redis import LuaScript
from agent_patterns.backends.sqs import local_consumer, send_job
from agent_patterns.crawl.netguard import BlockedAddressError, EgressPolicy
from agent_patterns.errors import ConflictError, NotFoundError
from agent_patterns.observability import logger
from agent_patterns.tenancy import validate_tenant_id
from agent_patterns.webhooks.outbox import QUEUE
from agent_patterns.webhooks.settings import MAX_RETRY_DELAY_S, WebhookSettings, webhook_settings
from agent_patterns.webhooks.store import event_body, signing_secrets
from agent_patterns.webhooks.targets import MAX_URL_CHARS, egress_policy, url_key, url_label

DEAD_LETTER_QUEUE = "webhook_dead_letter"  # local consumer name; on AWS WEBHOOK_DEAD_LETTER_QUEUE_URL
USER_AGENT = "agent-patterns-webhooks/1"
MAX_ANSWER_BYTES = 64 * 1024  # read this much of a receiver's answer at most, then hang up


class DeliveryMessage(BaseModel):
    kind: Literal["webhook"]
    event_id: str = Field(pattern=r"^msg_[0-9a-f]{32}_[a-z]+$")
    tenant_id: str
    url: str = Field(min_length=1, max_length=MAX_URL_CHARS)
    attempt: int = Field(1, ge=1, le=1000)

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, v: str) -> str:
        return validate_tenant_id(v)


class DeliveryInProgressError(ConflictError):
    """Another copy of this attempt is being made right now: try the message again later."""


def delivered_key(event_id: str, url: str) -> str:
    return f"webhook:{event_id}:{url_key(url)}:delivered"


def attempt_key(event_id: str, url: str) -> str:
    return f"webhook:{event_id}:{url_key(url)}:attempt"


# Claim attempt n of an event to an endpoint. 'delivered': a 2xx was recorded; 'stale': this
# attempt (or a later one) was already made; 'busy': this attempt is being made now; 'go'.
# KEYS: delivered, attempt; ARGV: n, seconds the claim holds (a worker that died frees it).
_CLAIM = LuaScript("""
if redis.call('EXISTS', KEYS[1]) == 1 then return 'delivered' end
local n = tonumber(ARGV[1])
local current = redis.call('GET', KEYS[2])
if current then
  local sep = string.find(current, '|', 1, true)
  local m = tonumber(string.sub(current, 1, sep - 1))
  local state = string.sub(current, sep + 1)
  if m > n or (m == n and state == 'done') then return 'stale' end
  if m == n then return 'busy' end
end
redis.call('SET', KEYS[2], ARGV[1] .. '|started', 'EX', ARGV[2])
return 'go'
""")


def sign(secrets: list[str], event_id: str, timestamp: int, body: str) -> str:
    """`webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` per secret,
    space-separated (two while a rotated secret still signs)."""
    from standardwebhooks import Webhook

    at = datetime.fromtimestamp(timestamp, tz=UTC)
    return " ".join(Webhook(secret).sign(event_id, at, body) for secret in secrets)


def retry_delay(failed_attempt: int, settings: WebhookSettings, retry_after: float | None = None) -> int:
    """Seconds before the next attempt: base x 4^(n-1), ±20% jitter, at least the receiver's
    Retry-After, at most 900 (SQS's longest delay)."""
    delay = settings.webhook_retry_base_seconds * 4.0 ** (failed_attempt - 1)
    delay *= random.SystemRandom().uniform(0.8, 1.2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return math.ceil(min(delay, MAX_RETRY_DELAY_S))


class GuardedBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's network backend, but each connection is resolved by the egress policy and
    made to an address it checked (never re-resolved): a host that resolves to an address the
    policy refuses raises BlockedAddressError before any packet is sent to it."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self.inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore2's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        last: Exception = BlockedAddressError(f"{host} has no address")
        for addr in await self.policy.resolve(host, port):
            try:
                return await self.inner.connect_tcp(str(addr), port, timeout, local_address, socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:  # try the next address
                last = exc
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore2's interface
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise BlockedAddressError("webhooks never connect to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer (refused, unreachable, timed out)
    error: str | None = None
    retry_after: float | None = None
    blocked: bool = False


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    for name, value in headers:
        if name.lower() == b"retry-after":
            with contextlib.suppress(ValueError):
                return max(0.0, float(value.decode("ascii", "replace")))
    return None


async def post(url: str, headers: dict[str, str], body: str, seconds: float) -> Answer:
    """POST once, through the egress policy, following no redirect; never raises for the
    receiver's faults (they are the answer)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Answer(None, "only http(s) URLs with a host are delivered to", blocked=True)
    pool = httpcore2.AsyncConnectionPool(network_backend=GuardedBackend(egress_policy()), max_connections=1)
    limits = {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}
    try:
        async with asyncio.timeout(seconds):
            async with pool.stream(
                "POST", url, headers=list(headers.items()), content=body.encode(), extensions={"timeout": limits}
            ) as response:
                read = 0
                async for chunk in response.aiter_stream():
                    read += len(chunk)
                    if read >= MAX_ANSWER_BYTES:
                        break
                return Answer(response.status, retry_after=_retry_after(response.headers))
    except BlockedAddressError as exc:
        return Answer(None, str(exc), blocked=True)
    except TimeoutError:
        return Answer(None, f"no answer within {seconds:g} s")
    except Exception as exc:  # httpcore2's ConnectError, ReadError, RemoteProtocolError, ...
        return Answer(None, f"{type(exc).__name__}: {exc}"[:300])
    finally:
        with contextlib.suppress(Exception):
            await pool.aclose()


async def dead_letter(message: DeliveryMessage, reason: str) -> None:
    """The delivery gives up: to WEBHOOK_DEAD_LETTER_QUEUE_URL with the reason (locally to the
    dev server's consumer, or logged and dropped)."""
    letter = {**message.model_dump(), "error": reason, "dead_lettered_at": datetime.now(UTC).isoformat()}
    queue_url = webhook_settings().webhook_dead_letter_queue_url
    if queue_url or local_consumer(DEAD_LETTER_QUEUE) is not None:
        await send_job(queue_url, letter, queue=DEAD_LETTER_QUEUE)
    else:
        logger.error(
            "webhook dead-lettered and dropped (WEBHOOK_DEAD_LETTER_QUEUE_URL is not set)",
            extra={"event_id": message.event_id, "endpoint": url_label(message.url), "reason": reason},
        )


async def deliver(raw: dict[str, Any]) -> dict[str, Any]:
    """Make one attempt of one delivery message; returns what happened (safe to log). Raises
    only when the message must come back later (its attempt is in hand elsewhere, a backend
    is down): SQS redelivers it, and after its receives the queue dead-letters it."""
    message = DeliveryMessage.model_validate(raw)
    settings = webhook_settings()
    keys = [delivered_key(message.event_id, message.url), attempt_key(message.event_id, message.url)]
    shown = {"event_id": message.event_id, "endpoint": url_label(message.url), "attempt": message.attempt}
    claim = await _CLAIM(keys, [message.attempt, math.ceil(settings.webhook_timeout_seconds) + 60])
    if claim == "delivered":
        return {**shown, "outcome": "already delivered"}
    if claim == "stale":
        return {**shown, "outcome": "duplicate"}
    if claim == "busy":
        raise DeliveryInProgressError(f"attempt {message.attempt} of {message.event_id} is being made elsewhere")
    try:
        body = await event_body(message.tenant_id, message.event_id)
        if body is None:
            raise NotFoundError(f"webhook event {message.event_id} of tenant {message.tenant_id} not found")
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(await signing_secrets(message.tenant_id), message.event_id, timestamp, body),
        }
        answer = await post(message.url, headers, body, settings.webhook_timeout_seconds)
    except BaseException:
        with contextlib.suppress(Exception):  # nothing was sent: a redelivery may make this attempt
            await get_redis().delete(keys[1])
        raise
    if answer.status is not None and 200 <= answer.status < 300:
        async with get_redis().pipeline(transaction=True) as pipe:
            pipe.set(keys[0], str(answer.status), ex=settings.webhook_delivered_ttl_seconds)
            pipe.delete(keys[1])
            await pipe.execute()
        return {**shown, "outcome": "delivered", "status": answer.status}
    failure = f"HTTP {answer.status}" if answer.status is not None else (answer.error or "no answer")
    if answer.blocked:
        reason = f"blocked: {failure}; webhooks reach public addresses only"
    elif answer.status == 410:
        reason = "HTTP 410: the receiver wants no more deliveries"
    elif message.attempt >= settings.webhook_max_attempts:
        reason = f"{message.attempt} attempts failed, the last: {failure}"
    else:
        reason = ""
    if reason:
        await dead_letter(message, reason)
        outcome: dict[str, Any] = {**shown, "outcome": "dead-lettered", "reason": reason}
    else:
        delay = retry_delay(message.attempt, settings, answer.retry_after)
        following = {**message.model_dump(), "attempt": message.attempt + 1}
        await send_job(settings.webhook_queue_url, following, delay_seconds=delay, queue=QUEUE)
        outcome = {**shown, "outcome": "retry", "reason": failure, "retry_in_s": delay}
    await get_redis().set(keys[1], f"{message.attempt}|done", ex=settings.webhook_delivered_ttl_seconds)
    return outcome
