"""crawl API function: `POST /v1/crawls`, `GET /v1/crawls/{run_id}` behind API Gateway (Mangum)."""

from agent_patterns.web import create_app, lambda_handler, not_implemented_route

app = create_app("crawl")
not_implemented_route(app, "POST", "/v1/crawls", "the crawl function")
not_implemented_route(app, "GET", "/v1/crawls/{run_id}", "the crawl function")
handler = lambda_handler(app)
