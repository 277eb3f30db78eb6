"""llm function: `POST /v1/llm/complete`, `GET /v1/usage` and the operator's limits routes
behind API Gateway (Mangum), SnapStart-ready."""

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Header, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import Field, model_validator

from agent_patterns import snapstart
from agent_patterns.inputs import PG_BIGINT_MAX, PG_INTEGER_MAX, RequestBody
from agent_patterns.llm import call_llm
from agent_patterns.llm.answer import AnswerRequest
from agent_patterns.llm.chat import ChatRequest
from agent_patterns.llm.routing import check_models
from agent_patterns.llm.settings import llm_settings
from agent_patterns.tenancy import validate_tenant_id
from agent_patterns.web import SSE_RESPONSE, CurrentOperator, CurrentTenant, create_app, lambda_handler


class CompleteRequest(RequestBody):
    prompt: str = Field(min_length=1)
    agent_type: str = Field("default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    model: str | None = Field(None, max_length=64, description="a model alias (default: the agent type's)")
    max_tokens: int = Field(1024, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    system: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_stream(cls, data: Any) -> Any:
        if isinstance(data, dict) and "stream" in data:
            raise ValueError(
                "stream: /v1/llm/complete answers once; for tokens as they are generated, "
                'POST /v1/chat/completions with "stream": true'
            )
        return data


class LimitsChange(RequestBody):
    """Per-tenant overrides; a field left out is kept, `null` clears it (back to the default)."""

    # Bounded by the ledger's column types (bigint, numeric(20, 9), integer): a larger value is a 422, not a 500.
    daily_tokens: int | None = Field(None, ge=0, le=PG_BIGINT_MAX)
    daily_usd: Decimal | None = Field(None, ge=0, max_digits=20, decimal_places=9, strict=False)  # a JSON number
    monthly_tokens: int | None = Field(None, ge=0, le=PG_BIGINT_MAX)
    monthly_usd: Decimal | None = Field(None, ge=0, max_digits=20, decimal_places=9, strict=False)
    requests_per_minute: int | None = Field(None, ge=0, le=PG_INTEGER_MAX)
    tokens_per_minute: int | None = Field(None, ge=0, le=PG_INTEGER_MAX)


check_models()
app = create_app("llm")


def _rate_headers(response: Response, rate: Any) -> None:
    """The per-minute limits as OpenAI reports them, so clients can pace themselves."""
    if rate is None:
        return
    reset = f"{rate.reset_seconds:.0f}s"
    for unit, limit, remaining in (
        ("requests", rate.limit_requests, rate.remaining_requests),
        ("tokens", rate.limit_tokens, rate.remaining_tokens),
    ):
        if limit:
            response.headers[f"x-ratelimit-limit-{unit}"] = str(limit)
            response.headers[f"x-ratelimit-remaining-{unit}"] = str(remaining)
            response.headers[f"x-ratelimit-reset-{unit}"] = reset


@app.get("/v1/usage")
async def usage(
    who: CurrentTenant,
    start: Annotated[str | None, Query(alias="from", description="first UTC day, YYYY-MM-DD (default: today)")] = None,
    end: Annotated[str | None, Query(alias="to", description="last UTC day, YYYY-MM-DD (default: today)")] = None,
    group_by: Literal["model", "day"] = "model",
) -> dict[str, Any]:
    from agent_patterns.llm.usage import budget_now, check_range, parse_day, report

    first, last = check_range(parse_day(start, "from"), parse_day(end, "to"))
    out = await report(who.id, first, last, group_by)
    out["budget"] = await budget_now(who.id, llm_settings().llm_daily_token_budget)
    return out


@app.get("/v1/admin/tenants/{tenant_id}/limits")
async def get_limits(tenant_id: str, operator: CurrentOperator) -> dict[str, Any]:
    from dataclasses import asdict

    from agent_patterns.llm.limits import get_overrides
    from agent_patterns.llm.usage import budget_now

    tid = validate_tenant_id(tenant_id)
    return {
        "tenant_id": tid,
        "overrides": asdict(await get_overrides(tid)),
        "effective": await budget_now(tid, llm_settings().llm_daily_token_budget),
    }


@app.put("/v1/admin/tenants/{tenant_id}/limits")
async def put_limits(tenant_id: str, body: LimitsChange, operator: CurrentOperator) -> dict[str, Any]:
    from dataclasses import asdict

    from agent_patterns.llm.limits import set_overrides

    tid = validate_tenant_id(tenant_id)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    overrides = await set_overrides(tid, changes, updated_by=operator)
    return {"tenant_id": tid, "overrides": asdict(overrides)}


@app.get("/v1/models")
async def models(who: CurrentTenant) -> dict[str, Any]:
    from agent_patterns.llm.openai_wire import models_body
    from agent_patterns.llm.routing import model_ids

    return models_body(model_ids())


CacheHeader = Annotated[
    Literal["auto", "on", "off"],
    Header(alias="x-agent-patterns-cache", description="cache sampled answers too (on), or never (off)"),
]


@app.post("/v1/chat/completions", response_model=None, responses=SSE_RESPONSE)
async def chat_completions(
    body: ChatRequest, who: CurrentTenant, response: Response, cache: CacheHeader = "auto"
) -> dict[str, Any] | StreamingResponse:
    from agent_patterns.llm.chat_call import call_chat
    from agent_patterns.llm.openai_wire import completion_body

    daily = llm_settings().llm_daily_token_budget
    if body.stream:
        from agent_patterns.llm.chat_stream import stream_chat

        return await stream_chat(body, who.id, daily_budget=daily, cache_mode=cache)
    result = await call_chat(body, who.id, daily_budget=daily, cache_mode=cache)
    _rate_headers(response, result.rate)
    response.headers["x-agent-patterns-provider"] = result.answer.provider
    response.headers["x-agent-patterns-cache"] = "hit" if result.cached else "miss"
    response.headers["x-agent-patterns-cost-usd"] = f"{result.cost_usd:.9f}"
    return completion_body(result.answer)


@app.post("/v1/answer", response_model=None, responses=SSE_RESPONSE)
async def answer_question(body: AnswerRequest, who: CurrentTenant) -> dict[str, Any] | StreamingResponse:
    from agent_patterns.llm.answer import answer, answer_stream

    daily = llm_settings().llm_daily_token_budget
    if body.stream:
        response: StreamingResponse = await answer_stream(who.id, body, daily_budget=daily)
        return response
    return await answer(who.id, body, daily_budget=daily)


@app.post("/v1/llm/complete")
async def complete(body: CompleteRequest, who: CurrentTenant, response: Response) -> dict[str, Any]:
    result = await call_llm(
        body.prompt,
        who.id,
        llm_settings().llm_daily_token_budget,
        body.agent_type,
        model=body.model,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        system=body.system,
    )
    _rate_headers(response, result.rate)
    return {
        "content": result.content,
        "tokens_used": result.tokens_used,
        "cost_usd": result.cost_usd,
        "cached": result.cached,
        "provider": result.provider,
        "model": result.model,
    }


# SnapStart (template.yaml: SnapStart on the published versions behind the `live` alias).
# Before the snapshot: load what the first request would (the Redis client, the OpenAI SDK and
# its HTTP transport: about 1.5 s here; psycopg for /healthz), so no restored environment pays
# for it. Nothing connects, nothing is sent, nothing unique is made. After a restore: sockets in
# the snapshot are dead, so the clients are dropped (never used) and made anew; the PRNG is
# reseeded so restored environments do not share retry jitter.
PRELOAD = (
    *snapstart.BACKEND_MODULES,
    "openai",
)


def _before_snapshot() -> None:
    snapstart.preload(PRELOAD)
    from openai import AsyncOpenAI

    # A throwaway client loads the HTTP transport and the chat resource; it sends nothing.
    AsyncOpenAI(api_key="snapshot", max_retries=0).chat.completions  # noqa: B018


def _after_restore() -> None:
    from agent_patterns.llm.providers import reset_clients

    snapstart.reset_after_restore(reset_clients)


snapstart.register(_before_snapshot, _after_restore)
# The same app also runs behind the Lambda Web Adapter (run.sh: LlmStreamFunction, a
# response-streaming function URL for `stream: true`), where the adapter calls these instead.
snapstart.add_adapter_routes(app, _before_snapshot, _after_restore)

handler = lambda_handler(app)
