"""streaming function: `GET /v1/runs/{run_id}/events` as SSE, under uvicorn behind the Lambda Web Adapter."""

from agent_patterns.web import create_app, not_implemented_route

app = create_app("streaming")
not_implemented_route(app, "GET", "/v1/runs/{run_id}/events", "the streaming function")
