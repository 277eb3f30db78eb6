"""llm function: `POST /v1/llm/complete` behind API Gateway (Mangum)."""

from agent_patterns.web import create_app, lambda_handler, not_implemented_route

app = create_app("llm")
not_implemented_route(app, "POST", "/v1/llm/complete", "the llm function")
handler = lambda_handler(app)
