"""Tenancy: strict ids and schema names, identifiers that cannot break quoting, authenticated identity."""

from __future__ import annotations

import time
from typing import Any

import jwt
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from agent_patterns.backends import migrations as m
from agent_patterns.backends.postgres import database_url
from agent_patterns.errors import InvalidTenantError, UnauthorizedError
from agent_patterns.tenancy import (
    SCHEMA_NAME_RE,
    TENANT_ID_RE,
    issue_token,
    tenant,
    tenant_from_request,
    validate_schema_name,
    validate_tenant_id,
)
from tests.sql_recording import RecordingConnection

HOSTILE = [
    'a"; DROP SCHEMA public CASCADE; --',
    "tenant'",
    "tenant;",
    "Tenant",
    "tenänt",
    "tenant\x00x",
    "tenant\n",
    "a" * 64,
    "",
    " tenant",
    "1tenant",
    "tenant-1",
    "ten ant",
    "ｔenant",  # fullwidth letter
]


@given(st.text(max_size=80))
def test_no_id_outside_the_rule_is_accepted(candidate: str) -> None:
    if TENANT_ID_RE.match(candidate):
        assert tenant(candidate).schema == "tenant_" + candidate
    else:
        with pytest.raises(InvalidTenantError):
            validate_tenant_id(candidate)


@given(st.from_regex(TENANT_ID_RE, fullmatch=True))
def test_every_valid_tenant_maps_to_a_valid_schema_name(tenant_id: str) -> None:
    schema = tenant(tenant_id).schema
    assert SCHEMA_NAME_RE.match(schema)
    assert len(schema.encode()) <= 63


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidTenantError):
        validate_tenant_id(name)
    with pytest.raises(InvalidTenantError):
        validate_schema_name(name)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=70).filter(lambda s: not SCHEMA_NAME_RE.match(s)))
async def test_an_invalid_schema_name_never_reaches_sql(name: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url(), autocommit=True) as conn:
        spy = RecordingConnection(conn)
        with pytest.raises(InvalidTenantError):
            await m.ensure_tenant_schema(spy.as_connection(), name)
        assert spy.statements == []


@settings(max_examples=15, deadline=None)
@given(st.from_regex(r"[a-z_][a-z0-9_]{0,62}", fullmatch=True).filter(lambda s: not s.startswith("pg_")))
async def test_valid_schema_names_are_created_exactly_as_named(name: str) -> None:
    if name == "agent_patterns":
        return
    async with await psycopg.AsyncConnection.connect(database_url(), autocommit=True) as conn:
        await m.ensure_tenant_schema(conn, name)
        cur = await conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (name,))
        assert await cur.fetchone() == (1,)


@pytest.mark.parametrize("name", [n for n in HOSTILE if n and "\x00" not in n])
def test_identifier_quoting_holds_for_hostile_names(name: str) -> None:
    """Even a name that bypassed validation could not escape its quotes through sql.Identifier."""
    with psycopg.connect(database_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))
        try:
            assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (name,)).fetchone() == (1,)
            assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'public'").fetchone() == (1,)
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(name)))


def test_local_bearer_token_identifies_its_tenant() -> None:
    token = issue_token("acme")
    assert tenant_from_request({"authorization": f"Bearer {token}"}, None) == tenant("acme")


def test_missing_tampered_and_expired_tokens_are_401() -> None:
    with pytest.raises(UnauthorizedError, match="missing bearer token"):
        tenant_from_request({}, None)
    token = issue_token("acme")
    head, body, sig = token.split(".")
    forged = jwt.encode(
        {"tenant_id": "evil", "kind": "bearer", "aud": "agent-patterns"}, "wrong-key-of-adequate-length-0123456789"
    )
    for bad in (f"{head}.{body}.{sig[:-2]}xx", forged, "not-a-token"):
        with pytest.raises(UnauthorizedError, match="invalid token"):
            tenant_from_request({"authorization": f"Bearer {bad}"}, None)
    expired = issue_token("acme", ttl_seconds=-10)
    with pytest.raises(UnauthorizedError, match="expired"):
        tenant_from_request({"authorization": f"Bearer {expired}"}, None)


def test_apigateway_mode_takes_the_tenant_from_authorizer_claims(settings_env: pytest.MonkeyPatch) -> None:
    settings_env.setenv("AUTH_MODE", "apigateway")
    claims = {"tenant_id": "globex", "sub": "u1"}
    event = {"requestContext": {"authorizer": {"jwt": {"claims": claims}}}}
    # A local bearer token is no identity on AWS: only the authorizer's claims count.
    headers = {"authorization": f"Bearer {issue_token('acme')}"}
    assert tenant_from_request(headers, event) == tenant("globex")
    with pytest.raises(UnauthorizedError, match="tenant_id"):
        tenant_from_request(headers, {"requestContext": {}})
    settings_env.setenv("TENANT_CLAIM", "custom:org")
    from agent_patterns.config import reset_settings

    reset_settings()
    claims["custom:org"] = "initech"
    assert tenant_from_request({}, event) == tenant("initech")


def test_without_auth_secret_the_layer_refuses_to_sign(settings_env: pytest.MonkeyPatch) -> None:
    from agent_patterns.config import reset_settings
    from agent_patterns.errors import ConfigurationError

    settings_env.delenv("AUTH_SECRET")
    reset_settings()
    with pytest.raises(ConfigurationError, match="AUTH_SECRET is not set"):
        issue_token("acme")


def test_the_dev_tools_create_the_local_secret_once(tmp_path: Any, settings_env: pytest.MonkeyPatch) -> None:
    from agent_patterns.config import reset_settings
    from agent_patterns.tenancy import auth_secret
    from agent_patterns_dev.environment import export_auth_secret

    settings_env.delenv("AUTH_SECRET")
    export_auth_secret(tmp_path)
    first = auth_secret()
    assert (tmp_path / "auth_secret").stat().st_mode & 0o077 == 0
    settings_env.delenv("AUTH_SECRET")
    export_auth_secret(tmp_path)  # a second start reads the same key back
    reset_settings()
    assert auth_secret() == first and len(first) == 64
    token = issue_token("acme")
    assert jwt.decode(token, first, algorithms=["HS256"], audience="agent-patterns")["exp"] > time.time()
