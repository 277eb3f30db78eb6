"""`agent-patterns dev`: every function on one local port, on embedded or given backends."""

from __future__ import annotations

import asyncio
import os
import sys

from agent_patterns.config import get_settings, reset_settings


async def _prepare() -> None:
    from agent_patterns.backends import connection, get_redis
    from agent_patterns.backends.postgres import close_postgres

    await get_redis().ping()
    async with connection():  # connecting runs the global migrations
        pass
    await get_redis().aclose()
    await close_postgres()


def _start_backends() -> dict[str, str]:
    """Start embedded servers for unset URLs and export every URL, so child processes share them."""
    from agent_patterns.backends.postgres import database_url
    from agent_patterns.backends.redis import redis_url

    settings = get_settings()
    where = {}
    for var, backend, resolve in (("REDIS_URL", "redis", redis_url), ("DATABASE_URL", "postgres", database_url)):
        embedded = settings.url_for(backend) is None  # type: ignore[arg-type]
        os.environ[var] = resolve()
        origin = f"embedded, data in {settings.data_dir}" if embedded else f"from {var}"
        where[backend] = f"{_redact(os.environ[var])}  ({origin})"
    reset_settings()
    return where


def _redact(url: str) -> str:
    """A URL fit to print: any password replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def serve(host: str = "127.0.0.1", port: int = 3000) -> int:
    import uvicorn

    from agent_patterns.backends import embedded
    from agent_patterns.local import ROUTES, LocalCrawlWorker, build_gateway

    os.environ.setdefault("AUTH_MODE", "local")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    reset_settings()
    if get_settings().effective_auth_mode != "local":
        print("agent-patterns dev: AUTH_MODE must be 'local' for the dev server", file=sys.stderr)
        return 2
    worker: LocalCrawlWorker | None = None
    try:
        where = _start_backends()
        asyncio.run(_prepare())
        gateway = build_gateway()
        worker = LocalCrawlWorker().start()
        base = f"http://{host}:{port}"
        lines = [
            f"agent-patterns dev: llm, search, crawl and streaming on {base}",
            f"  redis     {where['redis']}",
            f"  postgres  {where['postgres']}",
            "  routes    " + ", ".join(sorted({p + ("..." if p.endswith("/") else "") for p, _ in ROUTES})),
            f"  health    {base}/healthz  (one function: {base}/<function>/healthz)",
            "  token     uv run agent-patterns token --tenant NAME  (send as 'Authorization: Bearer <token>')",
            "  stop      Ctrl-C",
        ]
        print("\n".join(lines), flush=True)
        config = uvicorn.Config(gateway, host=host, port=port, log_level="info", lifespan="on")
        uvicorn.Server(config).run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        pass
    finally:
        if worker is not None:
            worker.stop()
        embedded.stop()
        print("agent-patterns dev: stopped", flush=True)
    return 0
