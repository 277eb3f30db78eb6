"""Checks on untrusted text and JSON before they reach Postgres or a provider.

Postgres refuses NUL in `text` and `jsonb`, and UTF-8 has no encoding for a lone surrogate
(JSON's `"\\ud800"`): either would fail deep inside a transaction as a 500. Checked up front
they are a 422 that names the field.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from agent_patterns.errors import ValidationError

# The largest values Postgres' integer and bigint columns hold: a field stored in one is bounded
# by it, so an oversized number is a 422 naming the field rather than a 500 from the INSERT.
PG_INTEGER_MAX = 2**31 - 1
PG_BIGINT_MAX = 2**63 - 1


class RequestBody(BaseModel):
    """A JSON request body. An unknown field is a 422 naming it: a typo (`max_token`) must not
    silently fall back to the default. Values keep their JSON types: `"stream": 0`,
    `"temperature": false` or `"max_pages": "5"` are refused, not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_tenant(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tenant_id" in data:
            raise ValueError("tenant_id: the tenant is the one your token names; leave tenant_id out of the body")
        return data


def check_text(value: str, field: str) -> str:
    """`value` unchanged, or a 422 naming `field` when it holds NUL or a lone surrogate."""
    if "\x00" in value:
        raise ValidationError(f"{field}: must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"{field}: contains a lone surrogate (\\u{ord(value[exc.start]):04x}) that is not valid UTF-8"
        ) from exc
    return value


MAX_JSON_DEPTH = 64


def check_json(value: Any, field: str) -> Any:
    """Every key and string inside `value`, checked like `check_text`, naming the path; NaN and
    infinity (which Python's json parses, but Postgres' jsonb refuses) are refused too, and so is
    nesting deeper than MAX_JSON_DEPTH (it would exhaust the stack of whatever reads it next)."""
    pending: list[tuple[Any, str, int]] = [(value, field, 0)]
    while pending:  # depth first, in document order, without recursion
        item, path, depth = pending.pop()
        if isinstance(item, str):
            check_text(item, path)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValidationError(f"{path}: NaN and Infinity are not JSON numbers")
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise ValidationError(f"{field}: nested more than {MAX_JSON_DEPTH} levels deep")
            if isinstance(item, dict):
                for key in item:
                    check_text(str(key), f"{path} key {str(key)[:40]!r}")
                children = [(v, f"{path}.{str(k)[:40]}", depth + 1) for k, v in item.items()]
            else:
                children = [(v, f"{path}.{n}", depth + 1) for n, v in enumerate(item)]
            pending.extend(reversed(children))
    return value


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON (what Postgres stores in jsonb, roughly)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
