"""Tenant identity and tenant schema names.

A tenant id is taken only from an authenticated principal: the API Gateway JWT authorizer's
claims on AWS, or a bearer token signed with AUTH_SECRET locally. Request bodies never name it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent_patterns.config import CoreSettings, get_settings, value_or_secret
from agent_patterns.errors import ConfigurationError, ForbiddenError, InvalidTenantError, UnauthorizedError

TENANT_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}\Z")
SCHEMA_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
SCHEMA_PREFIX = "tenant_"
TOKEN_AUDIENCE = "agent-patterns"  # noqa: S105 - a claim value, not a secret
TOKEN_ALGORITHM = "HS256"  # noqa: S105


@dataclass(frozen=True, slots=True)
class Tenant:
    """An authenticated tenant and the Postgres schema that holds its data."""

    id: str
    schema: str


def validate_schema_name(name: str) -> str:
    """Return `name` if it is a safe schema identifier, else raise before any SQL can see it."""
    if not isinstance(name, str) or not SCHEMA_NAME_RE.match(name):
        raise InvalidTenantError(f"invalid schema name {name!r}: must match {SCHEMA_NAME_RE.pattern}")
    return name


def validate_tenant_id(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not TENANT_ID_RE.match(tenant_id):
        raise InvalidTenantError(
            f"invalid tenant id {tenant_id!r}: use 1-48 characters a-z, 0-9 and _, starting with a letter"
        )
    return tenant_id


def tenant(tenant_id: str) -> Tenant:
    """The tenant for a validated id; its schema is `tenant_<id>` (always a valid identifier)."""
    tid = validate_tenant_id(tenant_id)
    return Tenant(id=tid, schema=validate_schema_name(SCHEMA_PREFIX + tid))


def auth_secret(settings: CoreSettings | None = None) -> bytes:
    """The HMAC key for tokens: AUTH_SECRET, or the secret AUTH_SECRET_ARN names."""
    settings = settings or get_settings()
    secret = value_or_secret(settings.auth_secret, settings.auth_secret_arn)
    if secret is not None:
        return secret.encode()
    raise ConfigurationError(
        "AUTH_SECRET is not set: set AUTH_SECRET or AUTH_SECRET_ARN"
        " (locally, `uv run agent-patterns dev` creates one in its data folder)"
    )


def sign(claims: Mapping[str, Any], *, ttl_seconds: int, settings: CoreSettings | None = None) -> str:
    import jwt

    now = int(time.time())
    body = {**claims, "aud": TOKEN_AUDIENCE, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(body, auth_secret(settings), algorithm=TOKEN_ALGORITHM)


def verify(token: str, *, settings: CoreSettings | None = None) -> dict[str, Any]:
    """Claims of a token we signed; UnauthorizedError says whether it expired or is invalid."""
    import jwt

    try:
        claims: dict[str, Any] = jwt.decode(
            token, auth_secret(settings), algorithms=[TOKEN_ALGORITHM], audience=TOKEN_AUDIENCE
        )
    except jwt.ExpiredSignatureError as exc:
        raise UnauthorizedError("token expired: get a new one") from exc
    except jwt.InvalidTokenError as exc:
        raise UnauthorizedError("invalid token") from exc
    return claims


def issue_token(tenant_id: str, *, ttl_seconds: int = 30 * 86_400, settings: CoreSettings | None = None) -> str:
    """A bearer token for `tenant_id` on a local (AUTH_MODE=local) server."""
    tid = validate_tenant_id(tenant_id)
    return sign({"sub": tid, "tenant_id": tid, "kind": "bearer"}, ttl_seconds=ttl_seconds, settings=settings)


def issue_operator_token(name: str, *, ttl_seconds: int = 3600, settings: CoreSettings | None = None) -> str:
    """A token for the operator (admin) routes on a local server: it names a person, not a tenant."""
    return sign({"sub": name, "kind": "operator"}, ttl_seconds=ttl_seconds, settings=settings)


def issue_stream_token(
    tenant_id: str, run_id: str, *, ttl_seconds: int | None = None, settings: CoreSettings | None = None
) -> str:
    """A short-lived token that opens one run's event stream (EventSource cannot send headers)."""
    settings = settings or get_settings()
    claims = {"kind": "stream", "tenant_id": validate_tenant_id(tenant_id), "run_id": run_id}
    return sign(claims, ttl_seconds=ttl_seconds or settings.stream_token_ttl_seconds, settings=settings)


_jwks_clients: dict[str, Any] = {}


def idp_claims(token: str, settings: CoreSettings | None = None) -> dict[str, Any]:
    """The claims of an identity provider's JWT, checked against its JWKS: for function URLs,
    which have no API Gateway authorizer in front of them."""
    import jwt

    settings = settings or get_settings()
    if not settings.jwt_issuer:
        raise UnauthorizedError("bearer tokens are not accepted here: use the run's stream token (?token=)")
    url = settings.jwt_jwks_url or settings.jwt_issuer.rstrip("/") + "/.well-known/jwks.json"
    client = _jwks_clients.get(url)
    if client is None:
        client = _jwks_clients[url] = jwt.PyJWKClient(url, cache_keys=True, lifespan=3600, timeout=5)
    audience = [a.strip() for a in (settings.jwt_audience or "").split(",") if a.strip()] or None
    try:
        key = client.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["RS256", "ES256"],
            issuer=settings.jwt_issuer,
            audience=audience,
            options={"verify_aud": audience is not None},
        )
    except jwt.ExpiredSignatureError as exc:
        raise UnauthorizedError("token expired: get a new one") from exc
    except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
        raise UnauthorizedError("invalid token") from exc
    return dict(claims)


def verify_idp_token(token: str, settings: CoreSettings | None = None) -> Tenant:
    """The tenant of an identity provider's JWT, checked against its JWKS."""
    settings = settings or get_settings()
    return _tenant_of_claims(idp_claims(token, settings), settings)


def _tenant_of_claims(claims: Mapping[str, Any], settings: CoreSettings) -> Tenant:
    if settings.tenant_claim not in claims:
        raise UnauthorizedError(f"no authenticated tenant: the JWT has no {settings.tenant_claim!r} claim")
    return tenant(str(claims[settings.tenant_claim]))


def _aws_claims(
    headers: Mapping[str, str], aws_event: Mapping[str, Any] | None, settings: CoreSettings
) -> Mapping[str, Any]:
    """On AWS: the claims API Gateway's JWT authorizer verified, or, for a request that came
    through a function URL (no authorizer), the bearer JWT verified here against the JWKS."""
    if aws_event is not None:  # through API Gateway: its authorizer's claims are the only source
        claims = (aws_event.get("requestContext") or {}).get("authorizer", {}).get("jwt", {}).get("claims")
        return dict(claims or {})
    token = bearer_token(headers)
    if token is None:
        raise UnauthorizedError("missing bearer token: send 'Authorization: Bearer <JWT>'")
    return idp_claims(token, settings)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def tenant_from_request(
    headers: Mapping[str, str], aws_event: Mapping[str, Any] | None, settings: CoreSettings | None = None
) -> Tenant:
    """The authenticated tenant of a request, from JWT authorizer claims or a local bearer token."""
    settings = settings or get_settings()
    if settings.effective_auth_mode == "apigateway":
        return _tenant_of_claims(_aws_claims(headers, aws_event, settings), settings)
    token = bearer_token(headers)
    if token is None:
        raise UnauthorizedError(
            "missing bearer token: send 'Authorization: Bearer <token>' (agent-patterns token --tenant NAME)"
        )
    claims = verify(token, settings=settings)
    if claims.get("kind") != "bearer" or "tenant_id" not in claims:
        raise UnauthorizedError("invalid token: not a bearer token")
    return tenant(str(claims["tenant_id"]))


def _groups(value: Any) -> list[str]:
    """A groups claim as API Gateway passes it: a list, or a string like "[ops admins]"."""
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value or "").strip().strip("[]")
    return [g for g in text.replace(",", " ").split() if g]


def operator_from_request(
    headers: Mapping[str, str], aws_event: Mapping[str, Any] | None, settings: CoreSettings | None = None
) -> str:
    """The operator making a request (their subject), or 401/403: tenant tokens are not enough.

    On AWS the JWT's OPERATOR_CLAIM must list OPERATOR_GROUP; locally, an operator token
    (`agent-patterns token --operator`)."""
    settings = settings or get_settings()
    if settings.effective_auth_mode == "apigateway":
        claims = _aws_claims(headers, aws_event, settings)
        if settings.operator_group not in _groups(claims.get(settings.operator_claim)):
            raise ForbiddenError(f"operators only: the caller is not in group {settings.operator_group!r}")
        return str(claims.get("sub") or claims.get("username") or "operator")
    token = bearer_token(headers)
    if token is None:
        raise UnauthorizedError("missing operator token: send 'Authorization: Bearer <token>'")
    claims = verify(token, settings=settings)
    if claims.get("kind") != "operator":
        raise ForbiddenError("operators only: a tenant token cannot change limits (agent-patterns token --operator)")
    return str(claims.get("sub") or "operator")
