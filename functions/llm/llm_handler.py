"""llm function: `POST /v1/llm/complete` behind API Gateway (Mangum), SnapStart-ready."""

from typing import Any

from pydantic import BaseModel, Field

from agent_patterns import snapstart
from agent_patterns.llm import call_llm
from agent_patterns.llm.routing import check_models
from agent_patterns.llm.settings import llm_settings
from agent_patterns.web import CurrentTenant, create_app, lambda_handler


class CompleteRequest(BaseModel):
    prompt: str = Field(min_length=1)
    agent_type: str = Field("default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    model: str | None = Field(None, max_length=64, description="a model alias (default: the agent type's)")
    max_tokens: int = Field(1024, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    system: str | None = None


check_models()
app = create_app("llm")


@app.post("/v1/llm/complete")
async def complete(body: CompleteRequest, who: CurrentTenant) -> dict[str, Any]:
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

handler = lambda_handler(app)
