"""call_chat: a conversation (messages, tools, structured output) through the gateway.

Same path as `call_llm`: per-tenant cache with single-flight, leased reservations, providers in
order, ledger, settle. The cache key covers every field that changes the answer; sampled calls
(temperature > 0 without a seed; OpenAI's default temperature is 1) are not cached unless the
caller asks for it, because a cache would turn a random answer into a fixed one.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from agent_patterns.llm import cache, providers
from agent_patterns.llm.call import Metered, Spent, answer_metered, cached
from agent_patterns.llm.chat import ChatAnswer, ChatRequest, Usage
from agent_patterns.llm.routing import Route, route_for_model
from agent_patterns.llm.settings import llm_settings
from agent_patterns.tenancy import validate_tenant_id

CacheMode = Literal["auto", "on", "off"]
CHAT_KEY_VERSION = 1


@dataclass(frozen=True)
class ChatResult:
    answer: ChatAnswer
    cached: bool
    cost_usd: float
    fell_back: bool = False
    rate: Any = None  # budget.RateState of the tenant's per-minute limits, when they apply


def cacheable(req: ChatRequest, mode: CacheMode) -> bool:
    if mode != "auto":
        return mode == "on"
    temperature = 1.0 if req.temperature is None else req.temperature
    return temperature == 0 or req.seed is not None


def chat_cache_key(tenant_id: str, alias: str, req: ChatRequest, max_tokens: int) -> str:
    material = req.model_dump(mode="json", exclude={"model", "stream", "stream_options", "user", "metadata"})
    material.update({"v": CHAT_KEY_VERSION, "tenant": tenant_id, "route": alias, "max_tokens": max_tokens})
    material.pop("max_completion_tokens", None)
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "llm:chat:{" + hashlib.sha256(canonical.encode()).hexdigest() + "}"  # its lock on the same slot


def _cached_value(answer: ChatAnswer) -> dict[str, Any]:
    return {
        "content": answer.content,
        "tool_calls": answer.tool_calls,
        "finish_reason": answer.finish_reason,
        "provider": answer.provider,
        "model": answer.model,
    }


def _from_cache(value: dict[str, Any]) -> ChatAnswer:
    return ChatAnswer(
        value["content"], value["tool_calls"], value["finish_reason"], Usage(0, 0), value["provider"], value["model"]
    )


@dataclass(frozen=True)
class Plan:
    """What a chat request resolves to before anything is spent."""

    route: Route
    max_tokens: int
    models: list[str]  # of the providers configured, in order
    cache_key: str | None


def plan(req: ChatRequest, tenant_id: str, cache_mode: CacheMode) -> Plan:
    """Model route, answer limit, providers (503 when none is configured, before any budget)
    and cache key (None when the answer must not be cached)."""
    validate_tenant_id(tenant_id)
    settings = llm_settings()
    route = route_for_model(req.model)
    max_tokens = req.output_limit(default=settings.llm_default_max_tokens, ceiling=settings.llm_max_tokens_limit)
    models = [model for _, model in providers.chain_for(route)]
    key = chat_cache_key(tenant_id, route.alias, req, max_tokens) if cacheable(req, cache_mode) else None
    return Plan(route, max_tokens, models, key)


async def begin(
    req: ChatRequest, tenant_id: str, cache_mode: CacheMode, started: float
) -> tuple[Plan, dict[str, Any] | None, cache.Held | bool]:
    """The plan, and the cached answer (a hit) or the single-flight lock to hold (a miss)."""
    p = plan(req, tenant_id, cache_mode)
    if p.cache_key is None:
        return p, None, True
    value, held = await cached(p.cache_key, tenant_id, started)
    return p, value, held


async def call_chat(
    req: ChatRequest, tenant_id: str, *, daily_budget: int | None = None, cache_mode: CacheMode = "auto"
) -> ChatResult:
    """One chat answer for `tenant_id`, within its budgets and rates."""
    started = time.perf_counter()
    p, value, held = await begin(req, tenant_id, cache_mode, started)
    if value is not None:
        return ChatResult(_from_cache(value), True, 0.0)
    key = p.cache_key
    try:

        async def store(answer: ChatAnswer) -> None:
            if key is not None:
                await cache.put(key, _cached_value(answer), held)

        done, spent = await answer_metered(
            tenant_id, p.route, req, p.max_tokens, req.size_bytes(), daily_budget, started, store, p.models
        )
        return _result(done, spent)
    finally:
        if key is not None:
            await cache.unlock(held)


def _result(done: Metered[ChatAnswer], spent: Spent) -> ChatResult:
    return ChatResult(done.answer, False, spent.cost_usd, done.fell_back, spent.rate)
