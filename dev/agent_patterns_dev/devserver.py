"""`agent-patterns dev`: every function on one local port, on embedded or given backends.

Everything it starts (Redis, Postgres, the crawl worker and its Chromium) stops on Ctrl-C and on
a failed start; a bad backend URL is reported in one line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys

from agent_patterns.config import get_settings, reset_settings


async def _prepare() -> None:
    """Reach both backends once (connecting runs the global migrations), then let go."""
    from agent_patterns.backends import connection, get_redis
    from agent_patterns.backends.postgres import close_postgres

    try:
        await get_redis().ping()
        async with connection():
            pass
    finally:
        await get_redis().aclose()
        await close_postgres()


def _redact(url: str) -> str:
    """A URL fit to print: any password replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class RedactTokens(logging.Filter):
    """Access-log lines without the tokens EventSource clients must send as `?token=`."""

    TOKEN = re.compile(r"((?:^|[?&])(?:token|access_token)=)[^&\s]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.TOKEN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


def _start_failure(exc: BaseException) -> str:
    """One line that says what failed to start and what to fix."""
    from agent_patterns.errors import AgentPatternsError

    message = exc.message if isinstance(exc, AgentPatternsError) else (str(exc).strip().splitlines() or [""])[0]
    name = type(exc).__name__
    if "redis" in name.lower() or "redis" in message.lower():
        hint = "check REDIS_URL (unset it to use the embedded Redis)"
    elif "postgres" in message.lower() or "psycopg" in type(exc).__module__:
        hint = "check DATABASE_URL (unset it to use the embedded Postgres)"
    else:
        hint = "see the message above"
    return f"agent-patterns dev: cannot start: {message or name}; {hint}"


def serve(host: str = "127.0.0.1", port: int = 3000) -> int:
    import uvicorn

    from agent_patterns_dev import embedded
    from agent_patterns_dev.environment import export_auth_secret, export_backends
    from agent_patterns_dev.gateway import ROUTES, LocalCrawlWorker, LocalWebhookWorker, build_gateway
    from agent_patterns_dev.settings import dev_settings

    os.environ.setdefault("AUTH_MODE", "local")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    reset_settings()
    if get_settings().effective_auth_mode != "local":
        print("agent-patterns dev: AUTH_MODE must be 'local' for the dev server", file=sys.stderr)
        return 2
    data_dir = dev_settings().data_dir
    worker: LocalCrawlWorker | None = None
    webhooks: LocalWebhookWorker | None = None
    try:
        try:
            where = export_backends(data_dir)
            export_auth_secret(data_dir)
            asyncio.run(_prepare())
        except Exception as exc:
            print(_start_failure(exc), file=sys.stderr, flush=True)
            return 1
        gateway = build_gateway()
        webhooks = LocalWebhookWorker().start()
        worker = LocalCrawlWorker().start()
        base = f"http://{host}:{port}"
        lines = [
            f"agent-patterns dev: llm, search, crawl and streaming on {base}",
            f"  redis     {_redact(get_settings().url_for('redis'))}  ({where['redis']})",
            f"  postgres  {_redact(get_settings().url_for('postgres'))}  ({where['postgres']})",
            "  routes    " + ", ".join(sorted({p + ("..." if p.endswith("/") else "") for p, _ in ROUTES})),
            f"  health    {base}/healthz  (one function: {base}/<function>/healthz)",
            "  token     uv run agent-patterns token --tenant NAME  (send as 'Authorization: Bearer <token>')",
            "  stop      Ctrl-C",
        ]
        hint = embedded.postgres_upgrade_hint(data_dir) if "embedded" in where["postgres"] else None
        if hint:
            lines.append(f"  note      {hint}")
        print("\n".join(lines), flush=True)
        config = uvicorn.Config(gateway, host=host, port=port, log_level="info", lifespan="on")
        server = uvicorn.Server(config)  # its logging is configured here: filter after that
        logging.getLogger("uvicorn.access").addFilter(RedactTokens())
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        pass
    finally:
        # A second Ctrl-C (a terminal signals the whole process group, and uv forwards it too)
        # must not cut the stopping short and leave servers behind; stopping is bounded anyway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for run_id in worker.stop() if worker is not None else []:
                print(f"agent-patterns dev: run {run_id} interrupted", flush=True)
        except Exception as exc:  # never keep the servers running because a run could not be marked
            print(f"agent-patterns dev: could not mark unfinished runs: {exc}", file=sys.stderr, flush=True)
        if webhooks is not None and (dropped := webhooks.stop()):
            print(f"agent-patterns dev: {dropped} webhook deliveries not made", flush=True)
        embedded.stop()
        print("agent-patterns dev: stopped", flush=True)
    return 0
