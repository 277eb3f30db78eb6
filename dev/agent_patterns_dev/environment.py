"""What the dev tools hand the layer: backend URLs (embedded when unset) and a local auth secret.

The layer itself never starts a server or invents a secret; these helpers do it for the dev
server, the CLI, the tests and the benchmarks, and export the values as environment variables
so that child processes and `agent_patterns.config` see the same ones.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from agent_patterns.config import get_settings, reset_settings


def local_auth_secret(data_dir: Path) -> str:
    """The dev server's token key: random, created once, kept (mode 0600) in the data dir."""
    path = data_dir / "auth_secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key


def export_auth_secret(data_dir: Path) -> None:
    """Set AUTH_SECRET to the local secret unless AUTH_SECRET or AUTH_SECRET_ARN is given."""
    reset_settings()  # the environment as it is now
    settings = get_settings()
    if settings.auth_secret is None and not settings.auth_secret_arn:
        os.environ["AUTH_SECRET"] = local_auth_secret(data_dir)
        reset_settings()


def export_backends(data_dir: Path) -> dict[str, str]:
    """Start embedded servers for unset URLs and export every URL; returns where each came from."""
    from agent_patterns_dev import embedded

    reset_settings()  # the environment as it is now
    settings = get_settings()
    where = {}
    for var, backend, given, arn, start in (
        ("REDIS_URL", "redis", settings.redis_url, settings.redis_url_secret_arn, embedded.redis_url),
        ("DATABASE_URL", "postgres", settings.database_url, settings.database_url_secret_arn, embedded.database_url),
    ):
        if given is not None or arn:
            where[backend] = f"from {var}" if given is not None else f"from {var}_SECRET_ARN"
            continue
        os.environ[var] = start(data_dir)
        where[backend] = f"embedded, data in {data_dir}"
    reset_settings()
    return where
