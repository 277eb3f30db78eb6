"""The neutral chat request (OpenAI's shape) to each provider's request, and answers back.

Anthropic differs in ways that matter for agents, each handled here: system prompts are a
parameter, tool results are user turns of `tool_result` blocks, consecutive turns of one role
must merge, `tool_choice` has other names, and there is no `response_format`: a JSON schema
becomes a forced tool whose input is the answer, validated against the schema before it is
returned, so structured output on the fallback is never looser than on OpenAI.
"""

from __future__ import annotations

import json
from typing import Any

from agent_patterns.errors import ProviderRequestError, ValidationError
from agent_patterns.llm.chat import (
    ChatAnswer,
    ChatRequest,
    FinishReason,
    ImagePart,
    Message,
    NamedToolChoice,
    TextPart,
    Usage,
)

JSON_OBJECT_INSTRUCTION = "Answer with one JSON object and nothing else."
ANTHROPIC_STOP: dict[str | None, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}


# ---- OpenAI -------------------------------------------------------------------------------


def _openai_content(message: Message) -> Any:
    if isinstance(message.content, list):  # cache_control is Anthropic's: not sent to OpenAI
        return [p.model_dump(mode="json", exclude_none=True, exclude={"cache_control"}) for p in message.content]
    return message.content


def openai_kwargs(req: ChatRequest, model: str, max_tokens: int) -> dict[str, Any]:
    """Keyword arguments of `chat.completions.create` for `req` on `model`."""
    messages = []
    for m in req.messages:
        out: dict[str, Any] = {"role": m.role, "content": _openai_content(m)}
        if m.name:
            out["name"] = m.name
        if m.tool_calls:
            out["tool_calls"] = [c.model_dump(mode="json") for c in m.tool_calls]
        if m.tool_call_id:
            out["tool_call_id"] = m.tool_call_id
        messages.append(out)
    kwargs: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    for name in ("temperature", "top_p", "seed", "user", "parallel_tool_calls"):
        value = getattr(req, name)
        if value is not None:
            kwargs[name] = value
    if req.stop:
        kwargs["stop"] = req.stops()
    if req.tools:
        kwargs["tools"] = [t.model_dump(mode="json", exclude_none=True, exclude={"cache_control"}) for t in req.tools]
    if req.tool_choice is not None:
        kwargs["tool_choice"] = (
            req.tool_choice.model_dump(mode="json") if isinstance(req.tool_choice, NamedToolChoice) else req.tool_choice
        )
    if req.response_format is not None:
        kwargs["response_format"] = req.response_format.model_dump(mode="json", by_alias=True, exclude_none=True)
    return kwargs


OPENAI_FINISH: dict[str | None, FinishReason] = {
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
}


def openai_usage(usage: dict[str, Any]) -> Usage:
    """OpenAI counts cached input inside prompt_tokens; the neutral usage counts it apart."""
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return Usage(int(usage.get("prompt_tokens") or 0) - cached, int(usage.get("completion_tokens") or 0), cached)


def answer_from_openai(body: dict[str, Any], model: str) -> ChatAnswer:
    """A Chat Completions response body (JSON, as sent) in the neutral shape."""
    choice = body["choices"][0]
    message = choice.get("message") or {}
    calls = [
        {"id": c["id"], "type": "function", "function": {k: c["function"][k] for k in ("name", "arguments")}}
        for c in message.get("tool_calls") or []
    ]
    reason = OPENAI_FINISH.get(choice.get("finish_reason"), "stop")
    return ChatAnswer(message.get("content"), calls, reason, openai_usage(body.get("usage") or {}), "openai", model)


# ---- Anthropic ----------------------------------------------------------------------------


def _image_block(part: ImagePart) -> dict[str, Any]:
    url = part.image_url.url
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media = header[5:].split(";")[0] or "image/png"
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}] if message.content else []
    blocks: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            block: dict[str, Any] = {"type": "text", "text": part.text}
            if part.cache_control is not None:
                block["cache_control"] = part.cache_control.model_dump(exclude_none=True)
            blocks.append(block)
        else:
            blocks.append(_image_block(part))
    return blocks


def _tool_input(arguments: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError as exc:
        raise ValidationError(f"tool call {name!r}: arguments are not valid JSON ({exc.msg})") from exc
    if not isinstance(value, dict):
        raise ValidationError(f"tool call {name!r}: arguments must be a JSON object")
    return value


def anthropic_kwargs(req: ChatRequest, model: str, max_tokens: int) -> dict[str, Any]:
    """Keyword arguments of `messages.create` for `req` on `model`."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:  # Anthropic wants user and assistant to alternate
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": list(blocks)})

    for m in req.messages:
        if m.role in ("system", "developer"):
            system.extend(_blocks(m))
        elif m.role == "user":
            add("user", _blocks(m))
        elif m.role == "assistant":
            blocks = _blocks(m)
            for call in m.tool_calls or []:
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.function.name,
                        "input": _tool_input(call.function.arguments, call.function.name),
                    }
                )
            add("assistant", blocks)
        else:  # tool
            add("user", [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.text()}])
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": "(conversation start)"}]})
    kwargs: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
    tools = [
        {
            "name": t.function.name,
            "description": t.function.description or "",
            "input_schema": t.function.parameters,
            **({"cache_control": t.cache_control.model_dump(exclude_none=True)} if t.cache_control else {}),
        }
        for t in req.tools or []
    ]
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
        tools.append(
            {
                "name": fmt.json_schema.name,
                "description": fmt.json_schema.description or "Give the answer as this tool's input.",
                "input_schema": fmt.json_schema.schema_ or {"type": "object"},
            }
        )
        kwargs["tool_choice"] = {"type": "tool", "name": fmt.json_schema.name}
    elif fmt is not None and fmt.type == "json_object":
        system.append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})
    _auto_cache_breakpoints(system, tools)
    if tools:
        kwargs["tools"] = tools
    if "tool_choice" not in kwargs and req.tool_choice is not None:
        choice = req.tool_choice
        if isinstance(choice, NamedToolChoice):
            kwargs["tool_choice"] = {"type": "tool", "name": choice.function.name}
        else:
            kwargs["tool_choice"] = {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
        if req.parallel_tool_calls is False and kwargs["tool_choice"]["type"] != "none":
            kwargs["tool_choice"]["disable_parallel_tool_use"] = True
    if system:
        kwargs["system"] = system
    if req.stop:
        kwargs["stop_sequences"] = req.stops()
    if req.user:
        kwargs["metadata"] = {"user_id": req.user}
    # Current Claude models refuse sampling parameters: temperature and top_p are not sent.
    return kwargs


def _auto_cache_breakpoints(system: list[dict[str, Any]], tools: list[dict[str, Any]]) -> None:
    """With LLM_AUTO_PROMPT_CACHE, a cache breakpoint after a long system prompt and after a long
    tool list (the stable prefix agents resend every turn), unless the caller placed its own."""
    from agent_patterns.llm.settings import llm_settings

    settings = llm_settings()
    if not settings.llm_auto_prompt_cache or any("cache_control" in b for b in [*system, *tools]):
        return
    least = settings.llm_auto_prompt_cache_min_chars
    if tools and len(json.dumps(tools)) >= least:
        tools[-1]["cache_control"] = {"type": "ephemeral"}
    if system and sum(len(b.get("text", "")) for b in system) >= least:
        system[-1]["cache_control"] = {"type": "ephemeral"}


def anthropic_usage(usage: dict[str, Any], output_tokens: int | None = None) -> Usage:
    return Usage(
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0) if output_tokens is None else output_tokens,
        int(usage.get("cache_read_input_tokens") or 0),
        int(usage.get("cache_creation_input_tokens") or 0),
    )


def forced_tool(req: ChatRequest) -> str | None:
    """The tool whose input is the structured answer on Anthropic (a JSON-schema request)."""
    fmt = req.response_format
    return fmt.json_schema.name if fmt is not None and fmt.type == "json_schema" and fmt.json_schema else None


def anthropic_finish(stop_reason: str | None, req: ChatRequest) -> FinishReason:
    return "stop" if forced_tool(req) else ANTHROPIC_STOP.get(stop_reason, "stop")


def answer_from_anthropic(body: dict[str, Any], req: ChatRequest, model: str) -> ChatAnswer:
    """A Messages API response body (JSON, as sent) in the neutral shape."""
    counted = anthropic_usage(body.get("usage") or {})
    blocks = body.get("content") or []
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text") or None
    uses = [b for b in blocks if b.get("type") == "tool_use"]
    forced = forced_tool(req)
    if forced is not None:
        assert req.response_format is not None and req.response_format.json_schema is not None
        answer = next((u for u in uses if u.get("name") == forced), None)
        if answer is None:
            raise ProviderRequestError("anthropic did not return the structured answer (no forced tool call)")
        check_schema(answer.get("input"), req.response_format.json_schema.schema_, "anthropic")
        return ChatAnswer(json.dumps(answer.get("input")), [], "stop", counted, "anthropic", model)
    if req.response_format is not None and req.response_format.type == "json_object":
        check_json_object(text or "", "anthropic")
    calls = [
        {"id": u["id"], "type": "function", "function": {"name": u["name"], "arguments": json.dumps(u.get("input"))}}
        for u in uses
    ]
    return ChatAnswer(text, calls, anthropic_finish(body.get("stop_reason"), req), counted, "anthropic", model)


def check_schema(value: Any, schema: dict[str, Any], provider: str) -> None:
    """The structured answer obeys the schema, or a clear error (never a looser answer)."""
    import jsonschema

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        raise ProviderRequestError(f"{provider}'s answer does not match the response schema: {exc.message}") from exc
    except jsonschema.SchemaError as exc:
        raise ValidationError(f"response_format.json_schema.schema is not a valid JSON schema: {exc.message}") from exc


def check_json_object(text: str, provider: str) -> None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProviderRequestError(f"{provider}'s answer is not JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise ProviderRequestError(f"{provider}'s answer is JSON but not an object")
