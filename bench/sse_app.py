"""The server side of bench/sse.py: one run's events, served by our SSE response and by
sse-starlette's EventSourceResponse over the same event source (no auth: benchmark only)."""

from collections.abc import AsyncIterator

from fastapi import FastAPI, Response
from sse_starlette.sse import EventSourceResponse

from agent_patterns.streaming.feeds import subscribe
from agent_patterns.streaming.sse import build_sse_response

app = FastAPI()


@app.get("/ours/{run_id}")
async def ours(run_id: str) -> Response:
    return build_sse_response(subscribe(run_id), run_id, heartbeat_interval=15)


@app.get("/sse-starlette/{run_id}")
async def theirs(run_id: str) -> Response:
    async def source() -> AsyncIterator[dict[str, str]]:
        async for event in subscribe(run_id):
            yield {"id": event.id, "data": event.data()}

    return EventSourceResponse(source(), ping=15)
