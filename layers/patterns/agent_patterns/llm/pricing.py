"""Pinned per-model prices (USD per 1M tokens), so cost is exact, offline and reviewable.

Checked against the providers' price pages on 2026-11-22. A model missing here is a
configuration error when the model table loads, never a silent $0.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from agent_patterns.errors import ConfigurationError


@dataclass(frozen=True)
class Price:
    input: Decimal
    output: Decimal
    cached_input: Decimal  # OpenAI cached prompt tokens / Anthropic cache reads
    cache_write: Decimal  # Anthropic cache creation (OpenAI: same as input)


def _p(i: str, o: str, c: str, w: str | None = None) -> Price:
    return Price(Decimal(i), Decimal(o), Decimal(c), Decimal(w or i))


PRICES: dict[str, Price] = {
    "gpt-4o": _p("2.50", "10.00", "1.25"),
    "gpt-4o-mini": _p("0.15", "0.60", "0.075"),
    "gpt-4.1": _p("2.00", "8.00", "0.50"),
    "gpt-4.1-mini": _p("0.40", "1.60", "0.10"),
    "claude-sonnet-5-5": _p("2.00", "10.00", "0.20", "2.50"),  # current Sonnet (docs, 2026-11)
    "claude-sonnet-4-5": _p("3.00", "15.00", "0.30", "3.75"),  # end of life 2026-11-30
    "claude-haiku-4-5": _p("1.00", "5.00", "0.10", "1.25"),
}
MILLION = Decimal(1_000_000)


def price(model: str) -> Price:
    try:
        return PRICES[model]
    except KeyError:
        raise ConfigurationError(
            f"no price for model {model!r}: add it to agent_patterns/llm/pricing.py (known: {', '.join(PRICES)})"
        ) from None


NANO = Decimal(1_000_000_000)


def _cost(
    model: str, input_tokens: int, output_tokens: int, cached_input_tokens: int, cache_write_tokens: int
) -> Decimal:
    """Exact cost in USD; `input_tokens` are the uncached, unwritten input tokens."""
    p = price(model)
    return (
        input_tokens * p.input
        + cached_input_tokens * p.cached_input
        + cache_write_tokens * p.cache_write
        + output_tokens * p.output
    ) / MILLION


def cost_nanousd(
    model: str, *, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0, cache_write_tokens: int = 0
) -> int:
    """Exact cost in nano-dollars (integers add up exactly in Redis and Postgres), rounded up."""
    total = _cost(model, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens) * NANO
    return int(total.to_integral_value(rounding="ROUND_CEILING"))


def worst_case_nanousd(models: list[str], *, input_tokens: int, max_output_tokens: int) -> int:
    """The most a call may cost on any of `models`: every input token at the dearer of the input
    and cache-write prices, and the full output allowance."""
    worst = 0
    for model in models:
        p = price(model)
        total = (input_tokens * max(p.input, p.cache_write) + max_output_tokens * p.output) * NANO / MILLION
        worst = max(worst, int(total.to_integral_value(rounding="ROUND_CEILING")))
    return worst


def cost_usd(
    model: str, *, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0, cache_write_tokens: int = 0
) -> float:
    """Exact cost; `input_tokens` are the uncached, unwritten input tokens."""
    total = _cost(model, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens)
    return float(total.quantize(Decimal("0.0000000001")))
