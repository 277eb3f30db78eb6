"""search function: `POST /v1/documents`, `POST /v1/search` behind API Gateway (Mangum)."""

from agent_patterns.web import create_app, lambda_handler, not_implemented_route

app = create_app("search")
not_implemented_route(app, "POST", "/v1/documents", "the search function")
not_implemented_route(app, "POST", "/v1/search", "the search function")
handler = lambda_handler(app)
