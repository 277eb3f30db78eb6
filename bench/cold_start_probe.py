"""One cold start, as deployed, in this fresh interpreter (run by bench/cold_start.py --deployed).

    python bench/cold_start_probe.py <function|floor> <event.json> [body] [--snapstart]

INIT is what Lambda runs before the first invocation: importing the handler module, which builds
the app and (with secrets given as ARNs) resolves the backend URLs through Secrets Manager. For
the streaming function it is what `run.sh` does under the Lambda Web Adapter: import uvicorn,
load the app, answer the adapter's readiness check (`GET /livez`). The first request is the
sample event through the handler (Mangum) or, for streaming, the event's path through the ASGI
app on the same event loop (as uvicorn would hand it over).

`--snapstart` plays SnapStart's part: the runtime's `snapshot_restore_py` is stood in for, the
before-snapshot hooks run at the end of INIT (or, for streaming, the Lambda Web Adapter's POST to
the before-checkpoint path), then the after-restore hooks, timed, then the first request. What
Lambda itself spends restoring the snapshot is not here.

Prints one JSON line starting with {"probe": ...} last.
"""

import json
import resource
import sys
import time
from typing import Any

T0 = time.perf_counter()


async def _asgi(app: Any, path: str, method: str = "GET") -> dict[str, Any]:
    """An HTTP request through an ASGI app, as uvicorn would hand it over (no socket)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"lambda-web-adapter")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent: dict[str, Any] = {"status": None, "body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return sent


class FakeSnapshotRestore:
    """Stands in for the Lambda runtime's `snapshot_restore_py`: records the hooks."""

    def __init__(self) -> None:
        import types

        self.before: list[tuple[object, tuple[object, ...], dict[str, object]]] = []
        self.after: list[tuple[object, tuple[object, ...], dict[str, object]]] = []
        module = types.ModuleType("snapshot_restore_py")
        module.register_before_snapshot = self._recorder(self.before)  # type: ignore[attr-defined]
        module.register_after_restore = self._recorder(self.after)  # type: ignore[attr-defined]
        sys.modules["snapshot_restore_py"] = module

    @staticmethod
    def _recorder(into: list[tuple[object, tuple[object, ...], dict[str, object]]]) -> object:
        def register(func: object, *args: object, **kwargs: object) -> object:
            into.append((func, args, kwargs))
            return func

        return register

    def before_snapshot(self) -> None:  # Lambda runs them in the reverse order of registration
        for func, args, kwargs in reversed(self.before):
            func(*args, **kwargs)  # type: ignore[operator]

    def after_restore(self) -> None:  # and these in the order of registration
        for func, args, kwargs in self.after:
            func(*args, **kwargs)  # type: ignore[operator]


def _mark() -> None:
    """Under -X importtime, separate INIT's imports from the first request's (on stderr)."""
    if "importtime" in sys._xoptions:
        print("probe: first request", file=sys.stderr, flush=True)


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it does not carry the parent's over exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--snapstart"]
    snap = FakeSnapshotRestore() if "--snapstart" in sys.argv else None
    name = args[0]
    with open(args[1], encoding="utf-8") as fh:
        event = json.load(fh)
    if len(args) > 2:  # a body replacing the sample's (unique per run: no cache hits)
        event["body"] = args[2]
    hooks_ms = 0.0
    if name == "streaming":
        import asyncio

        import uvicorn

        from agent_patterns_dev.gateway import load_function

        module = load_function("streaming")
        config = uvicorn.Config(module.app, host="127.0.0.1", port=8000, log_level="warning")
        config.load()
        app = config.loaded_app
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        ready = loop.run_until_complete(_asgi(app, "/livez"))
        assert ready["status"] == 200, ready
        if snap is not None:  # the adapter's hooks (AWS_LWA_SNAPSTART_*_PATH in template.yaml)
            done = loop.run_until_complete(_asgi(app, module.SNAPSTART_BEFORE_CHECKPOINT_PATH, "POST"))
            assert done["status"] == 204, done
        init_ms = (time.perf_counter() - T0) * 1000
        _mark()
        t1 = time.perf_counter()
        if snap is not None:
            done = loop.run_until_complete(_asgi(app, module.SNAPSTART_AFTER_RESTORE_PATH, "POST"))
            assert done["status"] == 204, done
            hooks_ms = (time.perf_counter() - t1) * 1000
            t1 = time.perf_counter()
        sent = loop.run_until_complete(_asgi(app, event["rawPath"]))
        status, body = sent["status"], sent["body"].decode()
    else:
        if name == "floor":
            from pathlib import Path

            sys.path.insert(0, str(Path(__file__).resolve().parent))
            import floor_app

            handler: Any = floor_app.handler
            context: Any = None
        else:
            from agent_patterns_dev.gateway import LocalLambdaContext, load_function

            handler = load_function(name).handler
            context = LocalLambdaContext(f"agent-patterns-{name}-bench", 30)
        if snap is not None:
            snap.before_snapshot()
        init_ms = (time.perf_counter() - T0) * 1000
        _mark()
        t1 = time.perf_counter()
        if snap is not None:
            snap.after_restore()
            hooks_ms = (time.perf_counter() - t1) * 1000
            t1 = time.perf_counter()
        response = handler(event, context)
        status, body = response["statusCode"], response.get("body", "")
    first_ms = (time.perf_counter() - t1) * 1000
    result: dict[str, Any] = {"init_ms": init_ms, "hooks_ms": hooks_ms, "first_ms": first_ms, "status": status}
    result["rss_mb"] = _peak_rss_mb()
    if status >= 300:
        result["body"] = str(body)[:500]
    print(json.dumps({"probe": result}), flush=True)


if __name__ == "__main__":
    main()
