"""Fixtures of the function tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent_patterns.config import reset_settings


@pytest.fixture
def sent(settings_env: pytest.MonkeyPatch, site: Any) -> Iterator[list[dict[str, Any]]]:
    """Crawl settings for the module's local `site` (it has a `host`); job messages are
    captured instead of sent."""
    from tests.conftest import captured_crawl_jobs

    settings_env.setenv("CRAWL_ALLOWED_PRIVATE_HOSTS_UNSAFE", site.host)
    settings_env.setenv("CRAWL_CONCURRENCY", "4")
    with captured_crawl_jobs(settings_env) as messages:
        yield messages


@pytest.fixture
def identity_provider(settings_env: pytest.MonkeyPatch) -> Iterator[Any]:
    """An OIDC-style issuer on localhost serving its JWKS, as Cognito would on AWS."""
    import http.server
    import threading

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    issuer = f"http://127.0.0.1:{httpd.server_address[1]}"
    settings_env.setenv("AUTH_MODE", "apigateway")
    settings_env.setenv("JWT_ISSUER", issuer)
    settings_env.setenv("JWT_AUDIENCE", "agent-app")
    reset_settings()

    def mint(tenant: str, *, issuer_override: str | None = None, audience: str = "agent-app") -> str:
        claims = {
            "sub": "user-1",
            "tenant_id": tenant,
            "iss": issuer_override or issuer,
            "aud": audience,
            "exp": int(time.time()) + 300,
        }
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})

    yield mint
    httpd.shutdown()


async def invoke_as_lambda(function: str, event: dict[str, Any], name: str) -> dict[str, Any]:
    """Invoke a function's handler with a sample event as Lambda does: in a thread with its own
    event loop (Mangum runs on it), the Postgres connection of that loop closed afterwards."""
    import asyncio

    from agent_patterns_dev.gateway import LocalLambdaContext, load_function

    handler = load_function(function).handler

    def invoke() -> dict[str, Any]:
        from agent_patterns.backends import postgres

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            response: dict[str, Any] = handler(event, LocalLambdaContext(name, 30))
            return response
        finally:
            loop.run_until_complete(postgres.close_postgres())
            asyncio.set_event_loop(None)
            loop.close()

    return await asyncio.to_thread(invoke)
