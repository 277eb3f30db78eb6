"""Settings from environment variables (pydantic-settings), read once per execution environment.

The shared core lives here; each function's package has its own small model (`llm.settings`,
`search.settings`, `crawl.settings`, `streaming.settings`), read through `settings_of`, so a
function validates only what it uses. Nothing outside this module reads `os.environ`.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent_patterns.errors import ConfigurationError

_cache: dict[type[BaseSettings], BaseSettings] = {}


def on_lambda() -> bool:
    """True inside a Lambda execution environment (the runtime always sets this variable)."""
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ


def settings_of[S: BaseSettings](model: type[S]) -> S:
    """The model read from the environment, once per execution environment."""
    found = _cache.get(model)
    if found is None:
        found = _cache[model] = model()
    return found  # type: ignore[return-value]


def reset_settings() -> None:
    """Forget every cached model (tests, and the dev tools after they export backend URLs)."""
    _cache.clear()


def value_or_secret(value: SecretStr | None, arn: str | None) -> str | None:
    """A setting given directly or as the ARN of a Secrets Manager secret; None when neither is."""
    if value is not None:
        return value.get_secret_value()
    if arn:
        return resolve_secret(arn)
    return None


def resolve_secret(arn: str) -> str:
    """Read a secret through Powertools parameters (cached for 5 minutes); boto3 loads only here."""
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(arn, max_age=300)
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"secret {arn} is empty or not a string")
    return value


class FunctionSettings(BaseSettings):
    """Base of every settings model: environment variables named like the fields, read-only."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class CoreSettings(FunctionSettings):
    """What every function reads: backends, authentication, runs, logging."""

    stage: str = Field("local", description="Deployment stage, added to every log line as `stage`.")
    redis_url: SecretStr | None = Field(None, description="Redis URL (`redis://`, `rediss://` or `unix://`).")
    redis_url_secret_arn: str | None = Field(None, description="Secrets Manager ARN holding the Redis URL.")
    database_url: SecretStr | None = Field(None, description="Postgres URL (with pgvector installed or installable).")
    database_url_secret_arn: str | None = Field(None, description="Secrets Manager ARN holding the Postgres URL.")
    auth_mode: Literal["local", "apigateway"] | None = Field(
        None, description="Where tenant identity comes from; default `apigateway` on Lambda, `local` elsewhere."
    )
    auth_secret: SecretStr | None = Field(None, description="HMAC key for local bearer tokens and stream tokens.")
    auth_secret_arn: str | None = Field(None, description="Secrets Manager ARN holding the HMAC key.")
    tenant_claim: str = Field("tenant_id", description="JWT claim naming the tenant (API Gateway authorizer).")
    operator_claim: str = Field(
        "cognito:groups", description="JWT claim listing the caller's groups (operator routes, API Gateway)."
    )
    operator_group: str = Field(
        "agent-patterns-operators", description="Group in OPERATOR_CLAIM that may use the operator (admin) routes."
    )
    jwt_issuer: str | None = Field(None, description="Identity provider whose JWTs the streaming function accepts.")
    jwt_audience: str | None = Field(None, description="Accepted JWT audience (comma-separated for several).")
    jwt_jwks_url: str | None = Field(None, description="JWKS URL; default `<JWT_ISSUER>/.well-known/jwks.json`.")
    stream_token_ttl_seconds: int = Field(3600, ge=60, le=86_400, description="Lifetime of a run's stream token.")
    stream_base_url: str | None = Field(
        None, description="Public base URL of the streaming function, for the `events_url` of new runs."
    )
    redis_socket_timeout: float = Field(5.0, gt=0, description="Seconds a Redis command may take.")
    redis_connect_timeout: float = Field(2.0, gt=0, description="Seconds to connect to Redis.")
    redis_health_check_interval: int = Field(
        15, ge=0, description="PING a connection idle this many seconds before reusing it."
    )
    redis_max_connections: int = Field(64, ge=4, description="Redis connections per execution environment.")
    database_connect_timeout: int = Field(5, ge=1, description="Seconds to connect to Postgres.")
    database_idle_check_seconds: float = Field(
        30.0, ge=0, description="Check the Postgres connection with `SELECT 1` after this long idle."
    )
    run_events_maxlen: int = Field(10_000, ge=100, description="Events kept per run (older ones are trimmed).")
    run_events_ttl_seconds: int = Field(7 * 86_400, ge=60, description="How long a run's events are kept.")
    run_lease_seconds: int = Field(
        60,
        ge=1,
        le=3600,
        description="A running step's lease, renewed every third of it: a run not renewed this long is reaped as"
        " `abandoned`.",
    )
    run_queued_lease_seconds: int = Field(
        900,
        ge=1,
        le=7 * 86_400,
        description="How long a queued run (or step) may wait for a worker before it is reaped as `abandoned`.",
    )
    max_request_bytes: int = Field(
        6 * 2**20, ge=1024, description="Largest request body accepted (413 beyond); Lambda's own limit is 6 MB."
    )
    powertools_service_name: str = Field("agent-patterns", description="Service name in logs and metrics.")
    powertools_metrics_namespace: str = Field("AgentPatterns", description="CloudWatch metrics namespace.")

    @property
    def effective_auth_mode(self) -> Literal["local", "apigateway"]:
        if self.auth_mode is not None:
            return self.auth_mode
        return "apigateway" if on_lambda() else "local"

    def url_for(self, backend: Literal["redis", "postgres"]) -> str:
        """The backend's URL from the environment or Secrets Manager."""
        if backend == "redis":
            url, var = value_or_secret(self.redis_url, self.redis_url_secret_arn), "REDIS_URL"
        else:
            url, var = value_or_secret(self.database_url, self.database_url_secret_arn), "DATABASE_URL"
        if url is None:
            raise ConfigurationError(
                f"{var} is not set: set {var} (or {var}_SECRET_ARN) to the {backend} server to use"
                " (locally, `uv run agent-patterns dev` starts an embedded one)"
            )
        return url


def get_settings() -> CoreSettings:
    """The shared core settings."""
    return settings_of(CoreSettings)
