"""crawl API function: `POST /v1/crawls` starts a run, `GET /v1/crawls/{run_id}` reports it."""

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from agent_patterns.config import get_settings
from agent_patterns.crawl.jobs import CrawlRequest, crawl_report, start_run
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


handler = lambda_handler(app)
