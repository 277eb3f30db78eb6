"""LLM calls for agents: cached per tenant, within a daily token budget, OpenAI then Anthropic."""

from agent_patterns.errors import BudgetExceededError, ProvidersUnavailableError
from agent_patterns.llm.call import LLMResult, call_llm

__all__ = ["BudgetExceededError", "LLMResult", "ProvidersUnavailableError", "call_llm"]
