"""Settings of the developer tools (never read by a deployed function)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def project_root() -> Path:
    """The checkout (dev/agent_patterns_dev/ is two levels down)."""
    return Path(__file__).resolve().parents[2]


class DevSettings(BaseSettings):
    """Variables of `agent-patterns dev` and the CLI; the README's table lists them."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    data_dir: Path = Field(
        default_factory=lambda: project_root() / ".agent-patterns",
        alias="AGENT_PATTERNS_DATA_DIR",
        description="Folder of the embedded servers' data and the local auth secret (dev server, CLI).",
    )
    api: str = Field(
        "http://127.0.0.1:3000",
        alias="AGENT_PATTERNS_API",
        description="Base URL the CLI talks to (default: the local dev server).",
    )
    token: SecretStr | None = Field(
        None, alias="AGENT_PATTERNS_TOKEN", description="Bearer or stream token the CLI sends."
    )


@lru_cache(maxsize=1)
def dev_settings() -> DevSettings:
    return DevSettings()
