"""Chat requests and answers in one neutral shape: OpenAI's Chat Completions format.

It is the format agent frameworks already speak, so it is the lingua franca here: the
OpenAI-compatible endpoint validates requests into `ChatRequest`, the pattern takes it, and
`llm.translate` maps it to each provider and back. A tool call from Claude comes back in the
same shape as one from OpenAI, so a conversation continues on either provider.

Fields OpenAI defines but this gateway does not implement are refused by name (422), never
silently ignored; unknown fields are refused too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from agent_patterns.errors import ValidationError
from agent_patterns.inputs import RequestBody

# OpenAI fields that would change the answer in ways this gateway cannot honour on both providers.
REFUSED_FIELDS = {
    "n": "only one choice per request is supported (n=1)",
    "logprobs": "log probabilities are not supported",
    "top_logprobs": "log probabilities are not supported",
    "logit_bias": "logit_bias is not supported",
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "functions": "use `tools` (the deprecated `functions` is not supported)",
    "function_call": "use `tool_choice` (the deprecated `function_call` is not supported)",
    "web_search_options": "web search is not supported",
    "service_tier": "service_tier is not supported",
    "store": "stored completions are not supported",
    "reasoning_effort": "reasoning_effort is not supported",
    "frequency_penalty": "frequency_penalty is not supported (the fallback provider has no equivalent)",
    "presence_penalty": "presence_penalty is not supported (the fallback provider has no equivalent)",
}


class CacheControl(RequestBody):
    """Anthropic's prompt-cache breakpoint (an extension OpenAI clients may send on a part)."""

    type: Literal["ephemeral"] = "ephemeral"
    ttl: Literal["5m", "1h"] | None = None


class TextPart(RequestBody):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None


class ImageUrl(RequestBody):
    url: str = Field(max_length=20_000_000)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(RequestBody):
    type: Literal["image_url"]
    image_url: ImageUrl


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(RequestBody):
    name: str = Field(min_length=1, max_length=128)
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(RequestBody):
    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(RequestBody):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None
    name: str | None = Field(None, max_length=64)
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = Field(None, max_length=200)
    refusal: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id (the id of the call it answers)")
        if self.role != "assistant" and self.tool_calls:
            raise ValueError("only assistant messages carry tool_calls")
        if self.role != "assistant" and self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        images = isinstance(self.content, list) and any(isinstance(p, ImagePart) for p in self.content)
        if self.role in ("system", "developer", "tool") and images:
            raise ValueError(f"a {self.role} message takes text only")
        return self

    def text(self) -> str:
        """The message's text parts joined (images left out)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


class FunctionDef(RequestBody):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(RequestBody):
    type: Literal["function"] = "function"
    function: FunctionDef
    cache_control: CacheControl | None = None


class NamedFunction(RequestBody):
    name: str


class NamedToolChoice(RequestBody):
    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaSpec(RequestBody):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ResponseFormat(RequestBody):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs json_schema: {name, schema}")
        return self


class StreamOptions(RequestBody):
    include_usage: bool = False


class ChatRequest(RequestBody):
    """A Chat Completions request, as OpenAI defines it (minus what REFUSED_FIELDS names)."""

    model: str = Field(min_length=1, max_length=128)
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _refused(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, reason in REFUSED_FIELDS.items():
                if name in data and not (name == "n" and data[name] in (1, None)):
                    raise ValueError(f"{name}: {reason}")
            data = {k: v for k, v in data.items() if k != "n"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ChatRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop: at most 4 sequences")
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError("tools: function names must be unique")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not in tools")
        if self.tool_choice not in (None, "none") and not self.tools:
            raise ValueError("tool_choice needs tools")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    def output_limit(self, default: int, ceiling: int) -> int:
        """The answer's token limit, always explicit: a reservation needs an upper bound."""
        limit = self.max_completion_tokens or self.max_tokens or default
        if limit > ceiling:
            raise ValidationError(f"max_tokens: at most {ceiling} (LLM_MAX_TOKENS_LIMIT)")
        return limit

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def size_bytes(self) -> int:
        """What the request sends a provider, in bytes: an upper bound of its input tokens."""
        body = self.model_dump(mode="json", include={"messages", "tools", "response_format", "tool_choice"})
        return len(json.dumps(body, ensure_ascii=False).encode())


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True)
class Usage:
    input_tokens: int  # uncached, unwritten input tokens
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }


@dataclass(frozen=True)
class ChatAnswer:
    """A provider's answer in the neutral shape."""

    content: str | None
    tool_calls: list[dict[str, Any]]  # OpenAI shape: {"id", "type": "function", "function": {"name", "arguments"}}
    finish_reason: FinishReason
    usage: Usage
    provider: str
    model: str
    extra: dict[str, Any] = field(default_factory=dict)

    def message(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        return out
