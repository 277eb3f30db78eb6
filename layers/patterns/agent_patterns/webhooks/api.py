"""What the webhook routes of the crawl API do: a tenant's default endpoints and signing secret."""

from __future__ import annotations

from typing import Any

from pydantic import Field, HttpUrl

from agent_patterns.inputs import RequestBody
from agent_patterns.webhooks import store
from agent_patterns.webhooks.targets import check_target


class WebhookEndpoints(RequestBody):
    """`PUT /v1/webhooks`: every run of the tenant is POSTed to each of these when it ends."""

    urls: list[HttpUrl] = Field(max_length=store.MAX_ENDPOINTS)


async def put_endpoints(tenant_id: str, body: WebhookEndpoints) -> dict[str, Any]:
    """Check each URL against the egress rule (422 naming `urls.<i>`), then replace the list."""
    urls = [str(u) for u in body.urls]
    for i, url in enumerate(urls):
        await check_target(url, f"urls.{i}")
    return {"urls": await store.set_endpoints(tenant_id, urls)}


async def get_endpoints(tenant_id: str) -> dict[str, Any]:
    return {"urls": await store.endpoints(tenant_id)}


async def get_secret(tenant_id: str) -> dict[str, Any]:
    return await store.secret_info(tenant_id)


async def rotate_secret(tenant_id: str) -> dict[str, Any]:
    return await store.rotate_secret(tenant_id)
