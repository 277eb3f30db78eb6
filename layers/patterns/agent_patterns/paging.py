"""Opaque page cursors for list routes (`GET /v1/documents`, `GET /v1/runs`).

A cursor is base64url (no padding) of compact JSON `{"k": <list name>, "after": <position>}`:
the position of the last item of the page just returned, so the next page starts strictly after
it (keyset paging: stable while rows are added or removed, and no `OFFSET` scan). A cursor is
not signed: it only moves the caller inside their own tenant's rows, and every value read back
from it is checked like any other input. Anything but a cursor of the same list is a 422
naming `cursor`, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from agent_patterns.errors import ValidationError
from agent_patterns.inputs import check_json

__all__ = ["MAX_CURSOR_CHARS", "decode_cursor", "encode_cursor", "invalid_cursor"]

MAX_CURSOR_CHARS = 4096


def encode_cursor(kind: str, after: Any) -> str:
    raw = json.dumps({"k": kind, "after": after}, separators=(",", ":"), ensure_ascii=True)
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii").rstrip("=")


def invalid_cursor(kind: str) -> ValidationError:
    return ValidationError(f"cursor: not a cursor of this list (pass `next_cursor` of the previous {kind} page as is)")


def decode_cursor(cursor: str, kind: str) -> Any:
    """The position a cursor of the `kind` list holds; a 422 naming `cursor` for anything else."""
    bad = invalid_cursor(kind)
    if not cursor or len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad from exc
    if not isinstance(value, dict) or value.get("k") != kind or "after" not in value:
        raise bad
    try:
        return check_json(value["after"], "cursor")
    except ValidationError as exc:
        raise bad from exc
