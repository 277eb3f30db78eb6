"""Sealing small secrets (a crawl login's password) that must wait in a run record or a queue.

Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) with a key derived from AUTH_SECRET:
what is stored is useless without the deployment's key, and tampering is detected.
"""

from __future__ import annotations

import base64
import hashlib

from agent_patterns.errors import ValidationError


def _fernet() -> object:
    from cryptography.fernet import Fernet

    from agent_patterns.tenancy import auth_secret

    digest = hashlib.sha256(b"agent-patterns/sealing/v1\x00" + auth_secret()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal(plaintext: str) -> str:
    token: bytes = _fernet().encrypt(plaintext.encode())  # type: ignore[attr-defined]
    return token.decode()


def unseal(token: str) -> str:
    from cryptography.fernet import InvalidToken

    try:
        plaintext: bytes = _fernet().decrypt(token.encode())  # type: ignore[attr-defined]
    except InvalidToken as exc:
        raise ValidationError("sealed value cannot be opened with this deployment's AUTH_SECRET") from exc
    return plaintext.decode()
