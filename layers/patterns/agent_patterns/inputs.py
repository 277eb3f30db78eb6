"""Checks on untrusted text and JSON before they reach Postgres or a provider.

Postgres refuses NUL in `text` and `jsonb`, and UTF-8 has no encoding for a lone surrogate
(JSON's `"\\ud800"`): either would fail deep inside a transaction as a 500. Checked up front
they are a 422 that names the field.
"""

from __future__ import annotations

import json
from typing import Any

from agent_patterns.errors import ValidationError


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


def check_json(value: Any, field: str) -> Any:
    """Every key and string inside `value`, checked like `check_text`, naming the path."""
    if isinstance(value, str):
        check_text(value, field)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(str(key), f"{field} key {str(key)[:40]!r}")
            check_json(item, f"{field}.{str(key)[:40]}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            check_json(item, f"{field}.{n}")
    return value


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON (what Postgres stores in jsonb, roughly)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
