"""SnapStart: each function registers its runtime hooks, and the after-restore hook really drops
the connections made before the snapshot (a restored environment must never reuse dead sockets).

Lambda's Python runtime provides `snapshot_restore_py`; here a stand-in records what a handler
registers, and the handler module is imported afresh (load_function caches it in sys.modules).
The streaming function runs under the Lambda Web Adapter, which calls its hooks over HTTP.
"""

from __future__ import annotations

import asyncio
import random
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_patterns.backends import connection, get_redis, postgres, redis
from agent_patterns.backends import sqs as sqs_backend
from agent_patterns.llm import providers
from agent_patterns_dev.gateway import load_function

ROOT = Path(__file__).resolve().parents[2]
MANGUM_FUNCTIONS = ("llm", "search", "crawl")


@dataclass
class RecordedHooks:
    """What a handler registered with the stand-in `snapshot_restore_py`."""

    before_snapshot: list[tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    after_restore: list[tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def module(self) -> types.ModuleType:
        module = types.ModuleType("snapshot_restore_py")

        def recorder(into: list[Any]) -> Callable[..., Any]:
            def register(func: Callable[..., object], *args: Any, **kwargs: Any) -> Callable[..., object]:
                into.append((func, args, kwargs))
                return func

            return register

        module.register_before_snapshot = recorder(self.before_snapshot)  # type: ignore[attr-defined]
        module.register_after_restore = recorder(self.after_restore)  # type: ignore[attr-defined]
        return module

    def run_before_snapshot(self) -> None:  # Lambda: reverse order of registration
        for func, args, kwargs in reversed(self.before_snapshot):
            func(*args, **kwargs)

    def run_after_restore(self) -> None:  # Lambda: order of registration
        for func, args, kwargs in self.after_restore:
            func(*args, **kwargs)


@pytest.fixture
def fresh_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], tuple[types.ModuleType, RecordedHooks]]]:
    """Import `functions/<name>/<name>_handler.py` anew with the stand-in runtime module; the
    cached module comes back afterwards, so other tests keep theirs."""

    def load(name: str) -> tuple[types.ModuleType, RecordedHooks]:
        hooks = RecordedHooks()
        monkeypatch.setitem(sys.modules, "snapshot_restore_py", hooks.module())
        monkeypatch.delitem(sys.modules, f"{name}_handler", raising=False)
        module = load_function(name)
        monkeypatch.delitem(sys.modules, f"{name}_handler")  # the fresh one goes; undo restores the cached one
        return module, hooks

    yield load


async def _connections_made() -> tuple[Any, Any]:
    """A Redis client and a Postgres connection of this loop, as a snapshot could hold them."""
    client = get_redis()
    await client.ping()
    async with connection() as db:
        await db.execute("SELECT 1")
    holder = postgres._holders[asyncio.get_running_loop()]
    assert holder.conn is not None
    return client, holder.conn


async def _close(client: Any, conn: Any) -> None:
    """The dropped objects are not used again; the test closes them instead of leaking them."""
    await client.aclose()
    await conn.close()


@pytest.mark.parametrize("name", MANGUM_FUNCTIONS)
def test_each_handler_registers_both_hooks(
    name: str, fresh_handler: Callable[[str], tuple[types.ModuleType, RecordedHooks]]
) -> None:
    module, hooks = fresh_handler(name)
    assert [func for func, _, _ in hooks.before_snapshot] == [module._before_snapshot]
    assert [func for func, _, _ in hooks.after_restore] == [module._after_restore]
    assert callable(module.handler)


@pytest.mark.parametrize("name", MANGUM_FUNCTIONS)
async def test_after_restore_drops_the_connections_made_before_the_snapshot(
    name: str, fresh_handler: Callable[[str], tuple[types.ModuleType, RecordedHooks]]
) -> None:
    _, hooks = fresh_handler(name)
    old_client, old_conn = await _connections_made()
    loop = asyncio.get_running_loop()
    providers._clients[loop] = {"openai": (sentinel_provider := object())}
    sqs_backend._client = sentinel_sqs = object()
    try:
        hooks.run_after_restore()

        assert len(redis._clients) == 0 and len(postgres._holders) == 0
        if name in ("llm", "search"):  # they hold the OpenAI client (completions, embeddings)
            assert len(providers._clients) == 0
        if name == "crawl":  # it holds the SQS client
            assert sqs_backend._client is None
        # The next request makes new ones, and they work.
        new_client, new_conn = await _connections_made()
        assert new_client is not old_client and new_conn is not old_conn
        assert not old_conn.closed  # dropped, never touched: after a restore its socket is dead
    finally:
        if providers._clients.get(loop, {}).get("openai") is sentinel_provider:
            del providers._clients[loop]
        if sqs_backend._client is sentinel_sqs:
            sqs_backend._client = None
        await _close(old_client, old_conn)


@pytest.mark.parametrize("name", MANGUM_FUNCTIONS)
async def test_after_restore_reseeds_the_prng(
    name: str, fresh_handler: Callable[[str], tuple[types.ModuleType, RecordedHooks]]
) -> None:
    """Every environment restored from one snapshot starts with the same PRNG state; the hook
    reseeds it so their retry jitter differs."""
    _, hooks = fresh_handler(name)
    random.seed(1234)
    snapshot_state = random.getstate()
    hooks.run_after_restore()
    assert random.getstate() != snapshot_state


@pytest.mark.parametrize("name", MANGUM_FUNCTIONS)
async def test_before_snapshot_preloads_and_connects_nothing(
    name: str, fresh_handler: Callable[[str], tuple[types.ModuleType, RecordedHooks]]
) -> None:
    module, hooks = fresh_handler(name)
    assert len(redis._clients) == 0 and len(postgres._holders) == 0
    hooks.run_before_snapshot()
    assert all(m in sys.modules for m in module.PRELOAD)
    # The throwaway SDK clients it makes are kept nowhere: nothing of them reaches the snapshot.
    assert len(redis._clients) == 0 and len(postgres._holders) == 0
    assert len(providers._clients) == 0 and sqs_backend._client is None


def test_handlers_import_without_the_runtime_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside Lambda there is no snapshot_restore_py: the handlers load all the same."""
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # makes the import fail
    for name in MANGUM_FUNCTIONS:
        monkeypatch.delitem(sys.modules, f"{name}_handler", raising=False)
        assert callable(load_function(name).handler)
        monkeypatch.delitem(sys.modules, f"{name}_handler")


@pytest.fixture
async def streaming_api() -> Any:
    transport = httpx.ASGITransport(app=load_function("streaming").app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        yield client


async def test_streaming_hooks_are_the_adapters_paths_only_on_lambda(
    streaming_api: httpx.AsyncClient, settings_env: pytest.MonkeyPatch
) -> None:
    """The Lambda Web Adapter POSTs to the paths template.yaml names; off Lambda they are 404."""
    module = load_function("streaming")
    for path in (module.SNAPSTART_BEFORE_CHECKPOINT_PATH, module.SNAPSTART_AFTER_RESTORE_PATH):
        assert (await streaming_api.post(path)).status_code == 404
    template = (ROOT / "template.yaml").read_text()
    assert f"AWS_LWA_SNAPSTART_BEFORE_CHECKPOINT_PATH: {module.SNAPSTART_BEFORE_CHECKPOINT_PATH}" in template
    assert f"AWS_LWA_SNAPSTART_AFTER_RESTORE_PATH: {module.SNAPSTART_AFTER_RESTORE_PATH}" in template
    settings_env.setenv("AWS_LAMBDA_FUNCTION_NAME", "agent-patterns-streaming-test")
    response = await streaming_api.post(module.SNAPSTART_BEFORE_CHECKPOINT_PATH)
    assert response.status_code == 204
    assert all(m in sys.modules for m in module.PRELOAD)


async def test_streaming_after_restore_drops_the_connections(
    streaming_api: httpx.AsyncClient, settings_env: pytest.MonkeyPatch
) -> None:
    module = load_function("streaming")
    settings_env.setenv("AWS_LAMBDA_FUNCTION_NAME", "agent-patterns-streaming-test")
    old_client, old_conn = await _connections_made()
    try:
        response = await streaming_api.post(module.SNAPSTART_AFTER_RESTORE_PATH)
        assert response.status_code == 204
        assert len(redis._clients) == 0 and len(postgres._holders) == 0
        new_client, _ = await _connections_made()
        assert new_client is not old_client
    finally:
        await _close(old_client, old_conn)


def test_template_turns_snapstart_on_for_every_zip_function_and_tracing_off() -> None:
    """SnapStart needs a published version (AutoPublishAlias); container images cannot have it."""
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):  # type: ignore[misc,name-defined]
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    functions = {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    for name, props in functions.items():
        if props.get("PackageType") == "Image":
            assert "SnapStart" not in props, name
        else:
            assert props.get("SnapStart") == {"ApplyOn": "PublishedVersions"}, name
            assert props.get("AutoPublishAlias"), name
    assert template["Globals"]["Function"].get("Tracing", "PassThrough") == "PassThrough"
