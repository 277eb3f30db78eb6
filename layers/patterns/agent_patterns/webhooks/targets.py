"""Where a webhook may go: the crawler's egress rule (public addresses only), at the door and on
every delivery.

A URL is checked when it is given (422 naming the field) and again when each delivery connects:
`delivery.GuardedBackend` resolves the host through the same `EgressPolicy` as the crawler's proxy and
connects to the address it checked, so DNS rebinding cannot swap it; redirects are never
followed. `CRAWL_ALLOWED_PRIVATE_HOSTS_UNSAFE` admits the hosts it names here too.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from agent_patterns.crawl.netguard import BlockedAddressError, EgressPolicy
from agent_patterns.crawl.settings import crawl_settings
from agent_patterns.errors import ValidationError

MAX_URL_CHARS = 2048


def egress_policy() -> EgressPolicy:
    """The crawler's policy: public addresses, plus the private hosts named in the allow-list."""
    return EgressPolicy(crawl_settings().crawl_allowed_private_hosts)


def url_key(url: str) -> str:
    """A short, stable name of an endpoint for Redis keys (the URL itself may hold a token)."""
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def url_label(url: str) -> str:
    """What logs say of an endpoint: its origin only (paths and queries often carry tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ":?"
    return f"{parts.scheme}://{host}{port}"


async def check_target(url: str, field: str) -> None:
    """ValidationError (422) naming `field` unless `url` is an http(s) URL that resolves to
    addresses the egress policy allows."""
    if len(url) > MAX_URL_CHARS:
        raise ValidationError(f"{field}: longer than {MAX_URL_CHARS} characters")
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValidationError(f"{field}: credentials in the URL are not accepted (receivers check the signature)")
    try:
        await egress_policy().check_url(url)
    except BlockedAddressError as exc:
        raise ValidationError(f"{field}: {exc}; webhooks reach public addresses only") from exc
