"""OpenAI first, Anthropic as fallback, through the official async SDKs and one retry loop.

The SDKs' own retries are off (max_retries=0): retries here honour Retry-After, stay inside one
total time budget, and never multiply with a second loop. Each SDK is imported the first time
it is needed: a cache hit or a budget refusal imports neither, and Anthropic is loaded only for
a fallback.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import random
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agent_patterns.config import value_or_secret
from agent_patterns.errors import ConfigurationError, ProviderRequestError, ProvidersUnavailableError
from agent_patterns.llm import breaker
from agent_patterns.llm.routing import Route

if TYPE_CHECKING:
    from agent_patterns.llm.chat import ChatAnswer, ChatRequest
from agent_patterns.llm.settings import llm_settings
from agent_patterns.observability import logger

RETRYABLE_STATUS = {408, 409, 429}


# One SDK client per event loop: its connection pool belongs to the loop that opened it (the dev
# server runs the crawl worker's loop in a thread next to uvicorn's; Lambda has one loop).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = weakref.WeakKeyDictionary()


def api_key(provider: str) -> str | None:
    """The provider's key from the environment or from Secrets Manager (cached 5 minutes)."""
    settings = llm_settings()
    if provider == "openai":
        return value_or_secret(settings.openai_api_key, settings.openai_api_key_secret_arn)
    return value_or_secret(settings.anthropic_api_key, settings.anthropic_api_key_secret_arn)


def configured(provider: str) -> bool:
    settings = llm_settings()
    if provider == "openai":
        return settings.openai_api_key is not None or bool(settings.openai_api_key_secret_arn)
    return settings.anthropic_api_key is not None or bool(settings.anthropic_api_key_secret_arn)


def _client(provider: str) -> Any:
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(provider)
    if client is None:
        settings = llm_settings()
        if provider == "openai":
            from openai import AsyncOpenAI

            client = AsyncOpenAI(
                api_key=api_key(provider),
                base_url=settings.openai_base_url,
                max_retries=0,
                timeout=settings.llm_attempt_timeout_seconds,
            )
        else:
            from anthropic import AsyncAnthropic

            client = AsyncAnthropic(
                api_key=api_key(provider),
                base_url=settings.anthropic_base_url,
                max_retries=0,
                timeout=settings.llm_attempt_timeout_seconds,
            )
        per_loop[provider] = client
    return client


def reset_clients() -> None:
    """Forget the clients (new settings, a SnapStart restore): the next call makes new ones.
    Each one forgotten is closed on the loop that owns it (`backends.loops` says why)."""
    from agent_patterns.backends.loops import close_on_loop

    dropped = list(_clients.items())
    _clients.clear()
    for loop, per_loop in dropped:
        if per_loop:
            close_on_loop(loop, _close_all(list(per_loop.values())))


async def _close_all(clients: list[Any]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):  # a dead connection closes all the same
            await client.close()


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return int(status) if isinstance(status, int) else None


def _retryable(exc: BaseException) -> bool:
    status = _status(exc)
    if status is not None:
        return status in RETRYABLE_STATUS or status >= 500
    names = {cls.__name__ for cls in type(exc).__mro__}  # the SDKs' and httpx's, without importing them
    return bool(names & {"APITimeoutError", "APIConnectionError", "TransportError"}) or isinstance(
        exc, TimeoutError | ConnectionError
    )


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except ValueError:
        return None
    return None


class _Fatal(Exception):
    """A provider answer that retrying or falling back cannot fix."""


async def retry_call[T](provider: str, attempt: Callable[[float], Awaitable[T]], deadline: float) -> T:
    """Run `attempt(timeout_s)` under the retry policy until it succeeds or time runs out.
    Raises _Fatal for answers retrying cannot fix, else the last retryable error."""
    settings = llm_settings()
    last: BaseException | None = None
    for attempt_no in range(settings.llm_max_attempts):
        remaining = deadline - time.monotonic()
        if remaining <= 0.05:
            break
        try:
            return await attempt(min(settings.llm_attempt_timeout_seconds, remaining))
        except Exception as exc:
            if not _retryable(exc):
                if _status(exc) is None:
                    raise  # not a provider answer: a bug or an unexpected error, reported as is
                raise _Fatal(provider) from exc
            last = exc
            wait = _retry_after(exc)
            if wait is None:
                wait = min(0.25 * 2**attempt_no, 4.0) * random.uniform(0.75, 1.25)  # noqa: S311 - jitter
            if attempt_no + 1 >= settings.llm_max_attempts or time.monotonic() + wait >= deadline:
                break
            logger.info(
                "provider attempt failed; retrying",
                extra={
                    "provider": provider,
                    "attempt": attempt_no + 1,
                    "status": _status(exc),
                    "wait_s": round(wait, 3),
                },
            )
            await asyncio.sleep(wait)
    raise last or TimeoutError(f"{provider}: no time left for an attempt")


def _vector(value: str | list[float]) -> list[float]:
    """An embedding as OpenAI sends it when asked for base64 (little-endian float32s), or as a
    JSON list (servers that ignore `encoding_format`)."""
    if not isinstance(value, str):
        return [float(v) for v in value]
    floats = array.array("f", base64.b64decode(value))
    if sys.byteorder == "big":
        floats.byteswap()
    return floats.tolist()


async def embed_openai(model: str, texts: list[str], dimensions: int) -> list[list[float]]:
    """Embeddings for `texts` (one request), under the same retry policy as completions."""
    chain_for_embeddings()
    deadline = time.monotonic() + llm_settings().llm_total_timeout_seconds

    async def attempt(attempt_s: float) -> list[list[float]]:
        body = {"model": model, "input": texts, "dimensions": dimensions, "encoding_format": "base64"}
        resp = await post("openai", body, attempt_s, path="/embeddings")
        return [_vector(item["embedding"]) for item in sorted(resp.json()["data"], key=lambda d: d["index"])]

    try:
        return await retry_call("openai", attempt, deadline)
    except _Fatal as fatal:
        raise _fatal_error("openai", fatal.__cause__ or fatal) from fatal.__cause__
    except Exception as exc:
        if _status(exc) is None and not _retryable(exc):
            raise
        raise ProvidersUnavailableError(
            f"the embeddings provider did not answer ({_status(exc) or type(exc).__name__}); try again shortly",
            headers={"Retry-After": "5"},
        ) from exc


def chain_for_embeddings() -> None:
    if not configured("openai"):
        raise ProvidersUnavailableError(
            "no embeddings provider is configured: set OPENAI_API_KEY, or send precomputed embeddings"
        )


def _fatal_error(provider: str, exc: BaseException) -> Exception:
    status = _status(exc)
    body = getattr(exc, "message", None) or str(exc)
    if status in (401, 403):
        var = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
        return ConfigurationError(f"{provider} rejected the credentials (HTTP {status}): check {var}")
    return ProviderRequestError(f"{provider} rejected the request (HTTP {status}): {body[:300]}")


def chain_for(route: Route) -> list[tuple[str, str]]:
    """(provider, model) in the order to try; ProvidersUnavailableError if none is configured."""
    chain = [(p, m) for p, m in (("openai", route.openai), ("anthropic", route.anthropic)) if m and configured(p)]
    if not chain:
        raise ProvidersUnavailableError(
            "no LLM provider is configured: set OPENAI_API_KEY (and ANTHROPIC_API_KEY for fallback)"
        )
    return chain


async def run_chain[T](route: Route, attempt: Callable[[str, str, float], Awaitable[T]]) -> tuple[T, bool]:
    """`attempt(provider, model, timeout_s)` on the route's providers in order, each under the
    retry policy, within one total deadline; the answer and whether it came from the fallback."""
    settings = llm_settings()
    deadline = time.monotonic() + settings.llm_total_timeout_seconds
    chain = chain_for(route)
    failures: list[str] = []
    for index, (provider, model) in enumerate(chain):
        is_last = index == len(chain) - 1
        if provider == "openai" and not is_last and await breaker.is_open(provider):
            failures.append("openai: circuit open")
            continue

        def one(timeout: float, provider: str = provider, model: str = model) -> Awaitable[T]:
            return attempt(provider, model, timeout)

        try:
            answer = await retry_call(provider, one, deadline)
        except _Fatal as fatal:
            raise _fatal_error(provider, fatal.__cause__ or fatal) from fatal.__cause__
        except Exception as exc:
            failures.append(f"{provider}: {_status(exc) or type(exc).__name__}")
            if provider == "openai":
                await breaker.record_failure(provider)
            continue
        if provider == "openai":
            await breaker.record_success(provider)
        return answer, index > 0 or bool(failures)
    raise ProvidersUnavailableError(
        "no LLM provider answered (" + "; ".join(failures) + "); try again shortly", headers={"Retry-After": "5"}
    )


PATHS = {"openai": "/chat/completions", "anthropic": "/v1/messages"}


async def post(
    provider: str, body: dict[str, Any], attempt_s: float, *, stream: bool = False, path: str | None = None
) -> Any:
    """POST a request body to the provider through its official SDK client (auth, base URL,
    errors as the SDK's status exceptions) and return the HTTP response, unparsed (streamed
    when `stream`). Skipping the SDK's typed layer saves a recursive transform of the request
    and a pydantic model per response or chunk: measured at ~0.4 ms per call and most of the
    per-token CPU of a relayed stream (bench/README.md, "LLM gateway", "Streamed chat")."""
    from httpx2 import Response

    return await _client(provider).post(
        path or PATHS[provider], body=body, cast_to=Response, options={"timeout": attempt_s}, stream=stream
    )


async def complete_chat(route: Route, req: ChatRequest, max_tokens: int) -> tuple[ChatAnswer, bool]:
    """A chat answer in the neutral shape, and whether it came from the fallback."""
    from agent_patterns.llm import translate

    async def attempt(provider: str, model: str, attempt_s: float) -> ChatAnswer:
        if provider == "openai":
            resp = await post(provider, translate.openai_kwargs(req, model, max_tokens), attempt_s)
            return translate.answer_from_openai(resp.json(), model)
        resp = await post(provider, translate.anthropic_kwargs(req, model, max_tokens), attempt_s)
        return translate.answer_from_anthropic(resp.json(), req, model)

    return await run_chain(route, attempt)
