"""The error hierarchy: each error knows its HTTP status and a stable machine-readable code."""

from __future__ import annotations

from typing import Any


class AgentPatternsError(Exception):
    """Base of every error a handler maps to `{"error": {"code", "message"}}`."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.details = details


class ConfigurationError(AgentPatternsError):
    status_code = 503
    code = "configuration_error"


class BadRequestError(AgentPatternsError):
    status_code = 400
    code = "bad_request"


class UnauthorizedError(AgentPatternsError):
    status_code = 401
    code = "unauthorized"


class ForbiddenError(AgentPatternsError):
    status_code = 403
    code = "forbidden"


class NotFoundError(AgentPatternsError):
    status_code = 404
    code = "not_found"


class ConflictError(AgentPatternsError):
    status_code = 409
    code = "conflict"


class RunEndedError(ConflictError):
    """The run has already ended (`complete` or `error`): it cannot be moved, cancelled or given events."""


class PayloadTooLargeError(AgentPatternsError):
    status_code = 413
    code = "payload_too_large"


class ValidationError(AgentPatternsError, ValueError):
    status_code = 422
    code = "invalid_input"


class InvalidTenantError(ValidationError):
    code = "invalid_tenant"


class RateLimitedError(AgentPatternsError):
    status_code = 429
    code = "rate_limited"


class BackendUnavailableError(AgentPatternsError):
    """A backend (Redis, Postgres) cannot be reached; clients should retry after a pause."""

    status_code = 503
    code = "backend_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5, **details: Any) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)}, **details)


class BudgetExceededError(RateLimitedError):
    code = "budget_exceeded"


class ProvidersUnavailableError(AgentPatternsError):
    status_code = 503
    code = "providers_unavailable"


class ProviderRequestError(ValidationError):
    """The provider refused the request itself (400/404/422, content policy): no retry, no fallback."""

    code = "provider_rejected"


class MethodNotAllowedError(AgentPatternsError):
    status_code = 405
    code = "method_not_allowed"


class UnsupportedMediaTypeError(AgentPatternsError):
    status_code = 415
    code = "unsupported_media_type"


# The one status -> code table: framework errors (unknown route, wrong method) answer with the
# same codes as the errors above.
HTTP_ERROR_CODES: dict[int, str] = {
    cls.status_code: cls.code
    for cls in (
        BadRequestError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        MethodNotAllowedError,
        ConflictError,
        PayloadTooLargeError,
        UnsupportedMediaTypeError,
        ValidationError,
        RateLimitedError,
        BackendUnavailableError,
    )
}
