"""Fixtures of the function tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def sent(settings_env: pytest.MonkeyPatch, site: Any) -> Iterator[list[dict[str, Any]]]:
    """Crawl settings for the module's local `site` (it has a `host`); job messages are
    captured instead of sent."""
    from agent_patterns.backends.sqs import set_local_consumer
    from agent_patterns.config import reset_settings

    settings_env.setenv("CRAWL_ALLOWED_PRIVATE_HOSTS_UNSAFE", site.host)
    settings_env.setenv("CRAWL_CONCURRENCY", "4")
    settings_env.delenv("CRAWL_QUEUE_URL", raising=False)
    reset_settings()
    messages: list[dict[str, Any]] = []
    set_local_consumer(messages.append)
    yield messages
    set_local_consumer(None)
