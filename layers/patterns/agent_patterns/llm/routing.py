"""Which models answer: aliases name an OpenAI and an Anthropic model; agent types pick an alias.

Defaults: every agent type uses alias `default` (gpt-4o, then claude-sonnet-5-5). Override with
LLM_MODELS (aliases) and LLM_AGENT_MODELS (agent type -> alias), both JSON. Every model must
have a price: the table is checked when it loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from agent_patterns.errors import ConfigurationError, ValidationError
from agent_patterns.llm.pricing import price
from agent_patterns.llm.settings import llm_settings

DEFAULT_ALIASES = {
    "default": {"openai": "gpt-4o", "anthropic": "claude-sonnet-5-5"},
    "fast": {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"},
}


@dataclass(frozen=True)
class Route:
    alias: str
    openai: str | None
    anthropic: str | None


@lru_cache(maxsize=4)
def _tables(models_json: str, agents_json: str) -> tuple[dict[str, Route], dict[str, str]]:
    try:
        aliases = {**DEFAULT_ALIASES, **(json.loads(models_json) if models_json else {})}
        agents = json.loads(agents_json) if agents_json else {}
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"LLM_MODELS / LLM_AGENT_MODELS is not valid JSON: {exc}") from exc
    routes: dict[str, Route] = {}
    for alias, providers in aliases.items():
        route = Route(alias, providers.get("openai"), providers.get("anthropic"))
        for model in filter(None, (route.openai, route.anthropic)):
            price(model)  # unknown model: a configuration error now, not a $0 call later
        routes[alias] = route
    for agent, alias in agents.items():
        if alias not in routes:
            raise ConfigurationError(f"LLM_AGENT_MODELS maps {agent!r} to unknown alias {alias!r}")
    return routes, agents


def route_for(agent_type: str, model: str | None) -> Route:
    settings = llm_settings()
    routes, agents = _tables(settings.llm_models, settings.llm_agent_models)
    alias = model or agents.get(agent_type, "default")
    if alias not in routes:
        raise ValidationError(f"model: unknown model {alias!r}; use one of {', '.join(sorted(routes))}")
    return routes[alias]


def check_models() -> None:
    """Load and check the model tables now (at INIT): an unpriced model fails the deploy, not a call."""
    settings = llm_settings()
    _tables(settings.llm_models, settings.llm_agent_models)


def route_for_model(model: str, agent_type: str = "default") -> Route:
    """An alias (with its fallback), or a concrete model from the price table (that provider
    only: a caller who names a model gets that model or an error, never another one)."""
    from agent_patterns.llm.pricing import PRICES

    settings = llm_settings()
    routes, _ = _tables(settings.llm_models, settings.llm_agent_models)
    if model in routes:
        return routes[model]
    if model in PRICES:
        anthropic = model.startswith("claude")
        return Route(model, None if anthropic else model, model if anthropic else None)
    raise ValidationError(
        f"model: unknown model {model!r}; use an alias ({', '.join(sorted(routes))}) or a priced model "
        f"({', '.join(sorted(PRICES))}); GET /v1/models lists them"
    )


def model_ids() -> list[tuple[str, str]]:
    """(id, owner) of every model a request may name: aliases first, then concrete models."""
    from agent_patterns.llm.pricing import PRICES

    settings = llm_settings()
    routes, _ = _tables(settings.llm_models, settings.llm_agent_models)
    out = [(alias, "agent-patterns") for alias in sorted(routes)]
    out += [(m, "anthropic" if m.startswith("claude") else "openai") for m in sorted(PRICES)]
    return out
