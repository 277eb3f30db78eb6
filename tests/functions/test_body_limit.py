"""Request bodies over MAX_REQUEST_BYTES are a 413 before they are read whole, with or without
a Content-Length."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent_patterns.config import reset_settings
from tests.conftest import bearer, function_client


@pytest.fixture
def small_limit(settings_env: pytest.MonkeyPatch) -> None:
    settings_env.setenv("MAX_REQUEST_BYTES", "2048")
    reset_settings()


async def test_a_body_with_a_content_length_over_the_limit_is_a_413(small_limit: None) -> None:
    async with function_client("search") as api:  # the app is built here, with the small limit
        body = b'{"documents": [{"text": "' + b"x" * 5000 + b'"}]}'
        response = await api.post(
            "/v1/documents", content=body, headers={**bearer(), "content-type": "application/json"}
        )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert "MAX_REQUEST_BYTES" in response.json()["error"]["message"]


async def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(small_limit: None) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"documents": [{"text": "'
        for _ in range(1000):  # 1 MB if it were all read
            sent += 1
            yield b"x" * 1024
        yield b'"}]}'

    async with function_client("search") as api:
        response = await api.post(
            "/v1/documents", content=chunks(), headers={**bearer(), "content-type": "application/json"}
        )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert sent < 10  # refused after about 2 KB, not after reading the megabyte
