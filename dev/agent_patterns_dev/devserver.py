"""`agent-patterns dev`: every function on one local port, on embedded or given backends.

Everything it starts (Redis, Postgres, the crawl worker and its Chromium) stops on Ctrl-C, on
SIGTERM (both exit 0) and on a failed start (exit 1). A failed start is one line naming what to
fix: a bad backend URL, a port in use, or a data folder another dev server holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Literal

from agent_patterns.config import get_settings, reset_settings

Backend = Literal["redis", "postgres"]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class BackendUnreachable(Exception):
    """A backend did not answer at start: which one, and why."""

    def __init__(self, backend: Backend, cause: BaseException) -> None:
        super().__init__(backend, cause)
        self.backend, self.cause = backend, cause


async def _prepare() -> None:
    """Reach both backends once (connecting runs the global migrations), then let go."""
    from agent_patterns.backends import connection, get_redis
    from agent_patterns.backends.postgres import close_postgres

    backend: Backend = "redis"
    try:
        await get_redis().ping()
        backend = "postgres"
        async with connection():
            pass
    except Exception as exc:
        raise BackendUnreachable(backend, exc) from exc
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


BACKENDS: dict[Backend, tuple[str, str]] = {"redis": ("Redis", "REDIS_URL"), "postgres": ("Postgres", "DATABASE_URL")}


def _first_line(exc: BaseException) -> str:
    from agent_patterns.errors import AgentPatternsError

    message = exc.message if isinstance(exc, AgentPatternsError) else str(exc)
    return (message.strip().splitlines() or [type(exc).__name__])[0].rstrip(".")


def _start_failure(exc: BaseException, where: dict[str, str] | None = None) -> str:
    """One line that says what failed to start, where, and what to fix."""
    if isinstance(exc, BackendUnreachable):
        name, var = BACKENDS[exc.backend]
        source = (where or {}).get(exc.backend, f"from {var}")
        try:
            address = _redact(get_settings().url_for(exc.backend))
        except Exception:
            address = "?"
        if source.startswith("from "):
            given = source.removeprefix("from ")
            return (
                f"agent-patterns dev: cannot start: {name} at {address} ({given}) does not answer:"
                f" {_first_line(exc.cause)}; check {given} (unset it to use the embedded {name})"
            )
        return (
            f"agent-patterns dev: cannot start: the embedded {name} at {address} does not answer:"
            f" {_first_line(exc.cause)} ({source})"
        )
    message, name = _first_line(exc), type(exc).__name__
    if "redis" in name.lower() or "redis" in message.lower():
        hint = "check REDIS_URL (unset it to use the embedded Redis)"
    elif "postgres" in message.lower() or "psycopg" in type(exc).__module__:
        hint = "check DATABASE_URL (unset it to use the embedded Postgres)"
    else:
        hint = "see the message above"
    return f"agent-patterns dev: cannot start: {message}; {hint}"


def _listen(host: str, port: int) -> list[socket.socket]:
    """The listening sockets for `host:port` (every address `host` names), made before anything
    else starts: a port in use is then one clear line, not a banner and uvicorn's Errno 98.
    uvicorn is handed these very sockets, so nothing can take the port in between."""
    found: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            sock = socket.socket(family, kind, proto)
            found.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no conflict
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if not port and found[1:]:  # port 0: every address on the port the first one got
                address = (address[0], found[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(2048)
    except OSError:
        for sock in found:
            sock.close()
        raise
    return found


def _listen_failure(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"agent-patterns dev: port {port} is in use; pass --port or stop the other server"
    reason = exc.strerror or _first_line(exc)
    return f"agent-patterns dev: cannot listen on {host}:{port}: {reason}; pass another --host or --port"


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM (`kill`, a process manager, `docker stop`) unwinds like Ctrl-C, so everything
    started stops; without it Python dies on the spot and Redis and Postgres stay running."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while a server starts, then act on them: interrupted in the middle,
    a server could be running before we know its pid, and nothing would stop it."""
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _: caught.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt


def serve(host: str = "127.0.0.1", port: int = 3000) -> int:
    """Run the dev server until Ctrl-C or SIGTERM; 0 after a clean stop, 1 when it cannot start."""
    import uvicorn

    from agent_patterns_dev import embedded
    from agent_patterns_dev.environment import export_auth_secret, export_backends
    from agent_patterns_dev.gateway import ROUTES, LocalCrawlWorker, LocalWebhookWorker, build_gateway
    from agent_patterns_dev.settings import dev_settings

    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    os.environ.setdefault("AUTH_MODE", "local")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    reset_settings()
    if get_settings().effective_auth_mode != "local":
        print("agent-patterns dev: AUTH_MODE must be 'local' for the dev server", file=sys.stderr)
        return 2
    data_dir = dev_settings().data_dir
    try:  # before anything starts: a second server here would replace redis.sock and orphan our Redis
        embedded.claim_data_dir(data_dir)
    except embedded.DataDirInUse as exc:
        holder = f"pid {exc.pid}" if exc.pid else "another process"
        print(
            f"agent-patterns dev: the data folder {data_dir} is in use by another dev server ({holder});"
            " stop it, or set AGENT_PATTERNS_DATA_DIR to another folder",
            file=sys.stderr,
        )
        return 1
    try:  # and before anything starts, so that a port in use leaves nothing to stop
        sockets = _listen(host, port)
    except OSError as exc:
        print(_listen_failure(host, port, exc), file=sys.stderr)
        return 1
    port = sockets[0].getsockname()[1]
    worker: LocalCrawlWorker | None = None
    webhooks: LocalWebhookWorker | None = None
    status = 0
    try:
        where: dict[str, str] = {}
        try:
            with _signals_deferred():
                where = export_backends(data_dir)
            export_auth_secret(data_dir)
            asyncio.run(_prepare())
        except Exception as exc:
            print(_start_failure(exc, where), file=sys.stderr, flush=True)
            return 1
        gateway = build_gateway()
        webhooks = LocalWebhookWorker().start()
        worker = LocalCrawlWorker().start()
        base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        lines = [
            f"agent-patterns dev: llm, search, crawl and streaming on {base}",
            f"  redis     {_redact(get_settings().url_for('redis'))}  ({where['redis']})",
            f"  postgres  {_redact(get_settings().url_for('postgres'))}  ({where['postgres']})",
            "  routes    " + ", ".join(sorted({p + ("..." if p.endswith("/") else "") for p, _ in ROUTES})),
            f"  health    {base}/healthz  (one function: {base}/<function>/healthz)",
            "  token     uv run agent-patterns token --tenant NAME  (send as 'Authorization: Bearer <token>')",
            "  stop      Ctrl-C (or SIGTERM)",
        ]
        hint = embedded.postgres_upgrade_hint(data_dir) if "embedded" in where["postgres"] else None
        if hint:
            lines.append(f"  note      {hint}")
        print("\n".join(lines), flush=True)
        config = uvicorn.Config(gateway, host=host, port=port, log_level="info", lifespan="on")
        server = uvicorn.Server(config)  # its logging is configured here: filter after that
        logging.getLogger("uvicorn.access").addFilter(RedactTokens())
        # uvicorn handles Ctrl-C and SIGTERM while it runs, then raises the signal again once it
        # has shut down: our handlers turn either into KeyboardInterrupt, and we stop below.
        server.run(sockets=sockets)
        if not server.started:  # it gave up before serving (its log says why)
            status = 1
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C (a terminal signals the whole process group, and uv forwards it too)
        # or SIGTERM must not cut the stopping short and leave servers behind; stopping is bounded.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        for sock in sockets:
            sock.close()
        try:
            for run_id in worker.stop() if worker is not None else []:
                print(f"agent-patterns dev: run {run_id} interrupted", flush=True)
        except Exception as exc:  # never keep the servers running because a run could not be marked
            print(f"agent-patterns dev: could not mark unfinished runs: {exc}", file=sys.stderr, flush=True)
        if webhooks is not None and (dropped := webhooks.stop()):
            print(f"agent-patterns dev: {dropped} webhook deliveries not made", flush=True)
        embedded.stop()
        print("agent-patterns dev: stopped", flush=True)
    return status
