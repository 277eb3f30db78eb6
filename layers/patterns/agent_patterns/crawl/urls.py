"""URL handling for the crawl: the exact URL is what gets fetched; a normalized key de-duplicates.

Fragments are dropped (`/a#top` and `/a` are one page) except hash routes (`#/route`,
`#!/route`), which single-page apps use as separate views. Path case and trailing slashes are
kept: both can name different resources.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def is_hash_route(fragment: str) -> bool:
    return fragment.startswith("/") or fragment.startswith("!")


def fetch_url(url: str) -> str:
    """The URL to navigate to: plain fragments removed, hash routes kept."""
    parts = urlsplit(url)
    fragment = parts.fragment if is_hash_route(parts.fragment) else ""
    return urlunsplit(parts._replace(fragment=fragment))


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme, 0)


def same_origin(a: str, b: str) -> bool:
    return origin(a) == origin(b)


def dedup_key(url: str) -> str:
    """Scheme and host lowercased, default port dropped, query sorted, plain fragment dropped."""
    parts = urlsplit(url)
    scheme, host, port = origin(url)
    netloc = host if port == DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    if ":" in host:  # IPv6 literal
        netloc = f"[{host}]" if port == DEFAULT_PORTS.get(scheme) else f"[{host}]:{port}"
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    fragment = parts.fragment if is_hash_route(parts.fragment) else ""
    return urlunsplit((scheme, netloc, parts.path or "/", query, fragment))


def is_http(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https")


def without_userinfo(url: str) -> str:
    """`url` without `user:password@`: what may be shown, logged or stored in the clear."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
