"""crawl API function: `POST /v1/crawls` starts a run, `GET /v1/crawls/{run_id}` reports it,
`POST /v1/crawls/{run_id}/cancel` cancels it."""

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from agent_patterns import snapstart
from agent_patterns.config import get_settings
from agent_patterns.crawl.jobs import CrawlRequest, cancel_run, crawl_report, start_run
from agent_patterns.runs.records import parse_run_id
from agent_patterns.tenancy import issue_stream_token
from agent_patterns.web import CurrentTenant, create_app, lambda_handler

app = create_app("crawl")


@app.post("/v1/crawls", status_code=202)
async def start_crawl(body: CrawlRequest, who: CurrentTenant, request: Request) -> JSONResponse:
    run_id = await start_run(who.id, body)
    base = get_settings().stream_base_url or str(request.base_url)
    payload = {
        "run_id": run_id,
        "status": "queued",
        "events_url": f"{base.rstrip('/')}/v1/runs/{run_id}/events",
        "stream_token": issue_stream_token(who.id, run_id),
    }
    return JSONResponse(payload, status_code=202, headers={"Location": f"/v1/crawls/{run_id}"})


@app.get("/v1/crawls/{run_id}")
async def get_crawl(run_id: str, who: CurrentTenant) -> dict[str, Any]:
    return await crawl_report(who.id, parse_run_id(run_id))


@app.post("/v1/crawls/{run_id}/cancel")
async def cancel_crawl(run_id: str, who: CurrentTenant) -> dict[str, Any]:
    return await cancel_run(who.id, parse_run_id(run_id))


# SnapStart (template.yaml: SnapStart on the published versions behind the `live` alias).
# Before the snapshot: load what the first request would (the Redis and Postgres clients, PyJWT
# for stream tokens, the SQS model), so no restored environment pays for it. Nothing connects,
# nothing is sent, nothing unique is made. After a restore: sockets in the snapshot are dead, so
# the clients are dropped (never used) and made anew; the PRNG is reseeded.
PRELOAD = (*snapstart.BACKEND_MODULES, "jwt")


def _before_snapshot() -> None:
    snapstart.preload(PRELOAD)
    import boto3

    # A throwaway client (dummy keys: no credential lookup) loads the SQS model into the default
    # session, so the real client costs ~10 ms instead of ~90 ms; it sends nothing.
    boto3.client("sqs", aws_access_key_id="snapshot", aws_secret_access_key="snapshot")  # noqa: S106


def _after_restore() -> None:
    from agent_patterns.backends.sqs import reset_sqs

    snapstart.reset_after_restore(reset_sqs)


snapstart.register(_before_snapshot, _after_restore)

handler = lambda_handler(app)
