"""crawl API function: `POST /v1/crawls` starts a run, `GET /v1/crawls/{run_id}` reports it,
`POST /v1/crawls/{run_id}/cancel` cancels it; `GET /v1/runs` lists the tenant's runs.
`GET`/`PUT /v1/webhooks`, `GET /v1/webhooks/secret` and `POST /v1/webhooks/secret/rotate` manage
the tenant's webhook endpoints and signing secret."""

from dataclasses import asdict
from typing import Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse

from agent_patterns import snapstart
from agent_patterns.config import get_settings
from agent_patterns.crawl.jobs import CrawlRequest, cancel_run, crawl_report, start_run
from agent_patterns.runs.records import list_runs, parse_run_id
from agent_patterns.tenancy import issue_stream_token
from agent_patterns.web import CurrentTenant, create_app, lambda_handler
from agent_patterns.webhooks import api as webhooks

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
async def get_crawl(
    run_id: str,
    who: CurrentTenant,
    pages_from: int = Query(0, ge=0, le=1000, description="first page (crawl order); the last report's `pages_next`"),
) -> dict[str, Any]:
    return await crawl_report(who.id, parse_run_id(run_id), pages_from=pages_from)


@app.post("/v1/crawls/{run_id}/cancel")
async def cancel_crawl(run_id: str, who: CurrentTenant) -> dict[str, Any]:
    return await cancel_run(who.id, parse_run_id(run_id))


@app.get("/v1/webhooks")
async def get_webhooks(who: CurrentTenant) -> dict[str, Any]:
    return await webhooks.get_endpoints(who.id)


@app.put("/v1/webhooks")
async def put_webhooks(body: webhooks.WebhookEndpoints, who: CurrentTenant) -> dict[str, Any]:
    return await webhooks.put_endpoints(who.id, body)


@app.get("/v1/webhooks/secret")
async def get_webhook_secret(who: CurrentTenant) -> dict[str, Any]:
    return await webhooks.get_secret(who.id)


@app.post("/v1/webhooks/secret/rotate")
async def rotate_webhook_secret(who: CurrentTenant) -> dict[str, Any]:
    return await webhooks.rotate_secret(who.id)


@app.get("/v1/runs")
async def list_tenant_runs(
    who: CurrentTenant,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page"),
    kind: str | None = Query(None, description="only runs of this kind (crawl)"),
    status: str | None = Query(None, description="only runs in this status (queued, running, complete, error)"),
) -> dict[str, Any]:
    page = await list_runs(who.id, limit=limit, cursor=cursor, kind=kind, status=status)
    return {"runs": [asdict(run) for run in page.runs], "next_cursor": page.next_cursor}


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
