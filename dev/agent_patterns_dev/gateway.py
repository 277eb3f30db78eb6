"""Local serving: load the function apps from `functions/` and route them on one port.

The routes are those API Gateway and the function URL give the functions on AWS, so a client
written against the dev server works unchanged against a deployment.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_patterns_dev.settings import project_root

FUNCTIONS = ("llm", "search", "crawl", "streaming")
WORKERS = ("webhooks",)  # queue consumers without an app: run by their local worker, not routed
# (path prefix, function): a path equal to a prefix goes to its function, else the first prefix
# that matches wins; mirrors template.yaml's routes.
ROUTES: tuple[tuple[str, str], ...] = (
    ("/v1/llm/", "llm"),
    ("/v1/usage", "llm"),
    ("/v1/chat/", "llm"),
    ("/v1/models", "llm"),
    ("/v1/answer", "llm"),
    ("/v1/admin/", "llm"),
    ("/v1/documents", "search"),
    ("/v1/search", "search"),
    ("/v1/crawls", "crawl"),
    ("/v1/webhooks", "crawl"),
    ("/v1/runs/", "streaming"),
    ("/v1/runs", "crawl"),  # GET /v1/runs exactly: an exact match wins over the prefix above
    ("/runs/", "streaming"),
)


def load_function(name: str, entry: str | None = None) -> ModuleType:
    """Import `functions/<name>/<entry>.py` (default `<name>_handler`) as Lambda would, with its
    folder on sys.path."""
    if name not in FUNCTIONS + WORKERS:
        raise ValueError(f"unknown function {name!r}: one of {', '.join(FUNCTIONS + WORKERS)}")
    module_name = entry or f"{name}_handler"
    if module_name in sys.modules:
        return sys.modules[module_name]
    folder = project_root() / "functions" / name
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(module_name, folder / f"{module_name}.py")
    if spec is None or spec.loader is None:  # pragma: no cover - the file is part of the repo
        raise ImportError(f"cannot load {folder / module_name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


HEALTH_PATHS = ("/healthz", "/")
HEALTH_METHODS = ("GET", "HEAD")


class LocalGateway:
    """An ASGI app that dispatches to the function apps like API Gateway does on AWS.

    `/<function>/healthz` reaches one function's `/healthz`; `/healthz` sums them all up. The
    gateway's own answers (that summary, an unknown route's 404, a 405) go through the layer's
    `RequestContextMiddleware` and `error_response`, so they carry `x-request-id` and the error
    shape of every other answer; the functions' answers get theirs from their own apps.
    """

    def __init__(self, apps: dict[str, ASGIApp]) -> None:
        from agent_patterns.web import RequestContextMiddleware

        self.apps = apps
        self._own: ASGIApp = RequestContextMiddleware(self._answer)

    def _target(self, path: str) -> tuple[ASGIApp, str] | None:
        exact = next((name for prefix, name in ROUTES if path == prefix), None)
        if exact is not None:
            return self.apps[exact], path
        for prefix, name in ROUTES:
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                return self.apps[name], path
        first, _, rest = path.lstrip("/").partition("/")
        if first in self.apps:
            return self.apps[first], "/" + rest
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope.get("path", "/")
        target = None if path in HEALTH_PATHS else self._target(path)
        if target is None:
            if scope["type"] == "http":
                await self._own(scope, receive, send)
            else:  # a websocket nothing serves: refuse the handshake
                await send({"type": "websocket.close", "code": 1000})
            return
        app, inner = target
        await app({**scope, "path": inner, "raw_path": inner.encode()}, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What the gateway answers itself: the health summary, or an error."""
        from agent_patterns.errors import HTTP_ERROR_CODES
        from agent_patterns.web import error_response, method_not_allowed

        path, method = scope.get("path", "/"), scope.get("method", "GET")
        if path not in HEALTH_PATHS:
            response = error_response(404, HTTP_ERROR_CODES[404], f"no route for {path}")
        elif method not in HEALTH_METHODS:
            response = method_not_allowed(method, HEALTH_METHODS)
        else:
            response = await self._health()
        await response(scope, receive, send)

    async def _health(self) -> JSONResponse:
        from agent_patterns.web import backend_health

        ok, state = await backend_health(("redis", "postgres"))
        body = {
            "status": "ok" if ok else "degraded",
            "backends": state,
            "functions": {name: f"/{name}/healthz" for name in self.apps},
        }
        return JSONResponse(body, status_code=200 if ok else 503)


def build_gateway() -> LocalGateway:
    return LocalGateway({name: load_function(name).app for name in FUNCTIONS})


class LocalLambdaContext:
    """What a Lambda context offers the handlers, for running them locally."""

    def __init__(self, function_name: str, timeout_s: float = 900.0) -> None:
        import time
        import uuid

        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function_name}"
        self.memory_limit_in_mb = 2048
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        import time

        return max(0, int((self._deadline - time.monotonic()) * 1000))


def sqs_event(body: dict[str, Any], receive_count: int = 1) -> dict[str, Any]:
    """An SQS trigger event holding one message, as Lambda's event source mapping sends it."""
    import uuid

    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "local",
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "0"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:local:000000000000:agent-patterns-crawl",
                "awsRegion": "local",
            }
        ]
    }


INTERRUPTED = "interrupted: the dev server stopped before the crawl finished"


class LocalCrawlWorker:
    """The crawl worker for the dev server: jobs arrive in-process and run one at a time in a
    thread, through the same handler and message contract as on AWS. A job that keeps failing is
    dropped after 3 attempts, as the DLQ redrive would. `stop()` cancels the job in flight
    (Chromium closes with it) and marks every unfinished run as interrupted."""

    MAX_RECEIVES = 3

    def __init__(self, invocation_timeout_s: float = 900.0) -> None:
        import queue
        import threading

        self.timeout_s = invocation_timeout_s
        self.jobs: queue.Queue[tuple[dict[str, Any], int] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="local-crawl-worker", daemon=True)
        self.current: dict[str, Any] | None = None
        self.module: ModuleType | None = None
        self.stopping = False

    def submit(self, message: dict[str, Any]) -> None:
        self.jobs.put((message, 1))

    def start(self) -> LocalCrawlWorker:
        from agent_patterns.backends.sqs import set_local_consumer

        self.module = load_function("crawl", "crawl_worker")
        set_local_consumer(self.submit)
        self.thread.start()
        return self

    def stop(self, grace_s: float = 10.0) -> list[str]:
        """Stop taking jobs, cancel the one in flight, mark unfinished runs; returns their ids."""
        import asyncio

        from agent_patterns.backends.sqs import set_local_consumer

        set_local_consumer(None)
        self.stopping = True
        unfinished = [] if self.current is None else [self.current]
        while not self.jobs.empty():
            item = self.jobs.get_nowait()
            if item is not None:
                unfinished.append(item[0])
        self.jobs.put(None)
        if self.current is not None and self.module is not None:
            loop: asyncio.AbstractEventLoop = self.module._loop
            loop.call_soon_threadsafe(_cancel_tasks, loop)
        self.thread.join(timeout=grace_s)
        return asyncio.run(_mark_interrupted(unfinished)) if unfinished else []

    def _run(self) -> None:
        from agent_patterns.observability import logger

        assert self.module is not None
        while (item := self.jobs.get()) is not None:
            message, receives = item
            self.current = message
            try:
                response = self.module.handler(
                    sqs_event(message, receives), LocalLambdaContext("crawl-worker", self.timeout_s)
                )
            except BaseException:
                if self.stopping:  # cancelled by stop(): the run is marked there
                    return
                # its one record failed: Powertools raises when every record of a batch fails,
                # and SQS would deliver the message again
                logger.warning("crawl job failed", exc_info=True, extra={"job": message})
                response = {"batchItemFailures": [{"itemIdentifier": "local"}]}
            finally:
                self.current = None
            if response.get("batchItemFailures"):
                if receives < self.MAX_RECEIVES:
                    self.jobs.put((message, receives + 1))
                else:
                    logger.error("crawl job failed 3 times; dropped (the DLQ on AWS)", extra={"job": message})


class LocalWebhookWorker:
    """The webhook function for the dev server: delivery messages (and their delayed retries)
    arrive in-process and run one at a time in a thread, through the same handler as on AWS. A
    message whose handler fails is tried again up to 3 times, then dropped, as the queue's DLQ
    would; a delivery that gives up after WEBHOOK_MAX_ATTEMPTS is logged (no DLQ locally).
    At start, then every `sweep_every_s` (between deliveries), it sweeps the webhook outbox as
    the reaper's schedule does on AWS. `stop()` drops what is still queued."""

    MAX_RECEIVES = 3

    def __init__(self, sweep_every_s: float = 60.0) -> None:
        import queue
        import threading

        self.sweep_every_s = sweep_every_s
        self.jobs: queue.Queue[tuple[dict[str, Any], int] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="local-webhook-worker", daemon=True)
        self.module: ModuleType | None = None

    def submit(self, message: dict[str, Any]) -> None:
        self.jobs.put((message, 1))

    def start(self) -> LocalWebhookWorker:
        from agent_patterns.backends.sqs import set_local_consumer

        self.module = load_function("webhooks", "webhook_handler")
        set_local_consumer(self.submit, queue="webhook")
        self.thread.start()
        return self

    def stop(self, grace_s: float = 5.0) -> int:
        """Stop taking messages; returns how many were still queued (dropped)."""
        from agent_patterns.backends.sqs import set_local_consumer

        set_local_consumer(None, queue="webhook")
        dropped = 0
        while not self.jobs.empty():
            dropped += self.jobs.get_nowait() is not None
        self.jobs.put(None)
        self.thread.join(timeout=grace_s)
        return dropped

    def _run(self) -> None:
        import queue
        import time

        from agent_patterns.observability import logger

        assert self.module is not None
        next_sweep = time.monotonic()
        while True:
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + self.sweep_every_s
            try:
                item = self.jobs.get(timeout=max(0.0, next_sweep - time.monotonic()))
            except queue.Empty:
                continue
            if item is None:
                return
            message, receives = item
            try:
                response = self.module.handler(sqs_event(message, receives), LocalLambdaContext("webhooks", 60.0))
            except Exception:  # its one record failed: Powertools raises, and SQS would deliver it again
                response = {"batchItemFailures": [{"itemIdentifier": "the message"}]}
            if response.get("batchItemFailures"):
                if receives < self.MAX_RECEIVES:
                    self.jobs.put((message, receives + 1))
                else:
                    logger.error("webhook message failed 3 times; dropped (the DLQ on AWS)")

    def _sweep(self) -> None:
        """Queue again what the outbox still holds (`webhooks.outbox.sweep_outbox`, which never
        raises), on the handler's own event loop: its backends are bound to it."""
        from agent_patterns.webhooks.outbox import sweep_outbox

        assert self.module is not None
        self.module._loop.run_until_complete(sweep_outbox())


def _cancel_tasks(loop: Any) -> None:
    """Cancel the crawl step itself (only it: Playwright's own tasks must keep the browser
    connection open while the crawl closes its browser on the way out)."""
    import asyncio

    for task in asyncio.all_tasks(loop):
        if getattr(task.get_coro(), "__name__", "") == "process_job":
            task.cancel()


async def _mark_interrupted(messages: list[dict[str, Any]]) -> list[str]:
    """End each unfinished run with an `error` event saying it was interrupted."""
    from agent_patterns.backends.postgres import close_postgres
    from agent_patterns.backends.redis import current_client
    from agent_patterns.runs import TERMINAL_STATUSES, get_run, transition

    marked = []
    try:
        for message in messages:
            tenant_id, run_id = message.get("tenant_id"), message.get("run_id")
            if message.get("kind") != "crawl" or not tenant_id or not run_id:
                continue
            record = await get_run(tenant_id, run_id)
            if record is not None and record.status not in TERMINAL_STATUSES:
                payload = {"message": INTERRUPTED, "reason": "interrupted"}
                # None: it ended meanwhile (a cancel, a reap): a terminal status is never overwritten
                if await transition(tenant_id, run_id, "error", payload, error_message=INTERRUPTED) is not None:
                    marked.append(run_id)
    finally:
        client = current_client()
        if client is not None:
            await client.aclose()
        await close_postgres()
    return marked
