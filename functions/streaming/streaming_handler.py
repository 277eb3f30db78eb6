"""streaming function: a run's events as SSE, under uvicorn behind the Lambda Web Adapter.

`GET /v1/runs/{run_id}/events` streams; `GET /runs/{run_id}` is a small page that follows a run
in the browser. Function URLs stream only through the adapter (run.sh starts uvicorn).
"""

from pathlib import Path

from fastapi import Query, Request, Response
from fastapi.responses import HTMLResponse

from agent_patterns import snapstart
from agent_patterns.streaming import run_streams
from agent_patterns.streaming.sse import build_sse_response
from agent_patterns.web import create_app

app = create_app("streaming")
VIEWER = (Path(__file__).with_name("run_viewer.html")).read_text(encoding="utf-8")


@app.get("/v1/runs/{run_id}/events", response_model=None)
async def run_events(
    run_id: str,
    request: Request,
    token: str | None = Query(None, description="the run's stream token"),
    last_event_id: str | None = Query(None, alias="lastEventId", description="resume after this event id"),
) -> Response:
    await run_streams.authorize(run_id, request.headers, token)
    after = request.headers.get("last-event-id") or last_event_id or None
    if await run_streams.finished_with_nothing_left(run_id, after):
        return Response(status_code=204)
    heartbeat, max_duration, retry_ms = run_streams.stream_limits()
    events = run_streams.stream_events(run_id, after)
    return build_sse_response(events, run_id, heartbeat, max_duration=max_duration, retry_ms=retry_ms)


@app.get("/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
async def run_viewer(run_id: str) -> HTMLResponse:
    headers = {
        "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
    }
    return HTMLResponse(VIEWER, headers=headers)


# SnapStart (template.yaml). The Lambda Web Adapter is this function's runtime, so the Python
# runtime's hooks never run here: the adapter (1.1.0 and later) POSTs to these paths instead
# (AWS_LWA_SNAPSTART_BEFORE_CHECKPOINT_PATH / AWS_LWA_SNAPSTART_AFTER_RESTORE_PATH) and answers
# 403 to anyone else asking for them. Before the snapshot: import what the first stream would
# (the Redis and Postgres clients, PyJWT), nothing connects. After a restore: sockets in the
# snapshot are dead, so the clients are dropped (never used) and made anew; the PRNG is reseeded.
SNAPSTART_BEFORE_CHECKPOINT_PATH = snapstart.ADAPTER_BEFORE_CHECKPOINT_PATH
SNAPSTART_AFTER_RESTORE_PATH = snapstart.ADAPTER_AFTER_RESTORE_PATH
PRELOAD = (*snapstart.BACKEND_MODULES, "jwt")


def _before_snapshot() -> None:
    snapstart.preload(PRELOAD)


def _after_restore() -> None:
    snapstart.reset_after_restore()


snapstart.add_adapter_routes(app, _before_snapshot, _after_restore)
