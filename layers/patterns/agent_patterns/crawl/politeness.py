"""Politeness: a crawl sends the site's origin at most `max_requests_per_second` requests.

What counts is every document request the crawl's browser makes to the crawled origin: its page
navigations, robots.txt and sitemap fetches, the login page, and documents a page loads by itself
(a same-origin iframe, a script or form navigating the tab). A page's sub-resources (scripts,
stylesheets, fetch/XHR, and the /favicon.ico Chromium itself may ask for as a tab closes, which
Playwright's interception does not see) belong to a page already admitted and are not counted;
neither is a redirect hop, which Chromium follows within the request that got it.

The limit is a minimum interval (a token bucket holding one token): each request takes the next
free slot, at least `1 / rate` after the previous one, in the order asked. The crawler takes the
slot of its own navigations before the page's time starts, so a queue of tabs never eats into a
page's 30 s; the browser's other document requests wait for theirs in the request guard. A
robots.txt `Crawl-delay` for our product token (or `*`), when robots.txt is respected, stretches
the interval (up to `1 / MIN_REQUESTS_PER_SECOND`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

MIN_REQUESTS_PER_SECOND = 0.05  # one request every 20 s: the slowest rate asked for or honoured
MAX_REQUESTS_PER_SECOND = 100.0
MAX_INTERVAL_S = 1 / MIN_REQUESTS_PER_SECOND


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:  # not a port: no origin of ours
        port = None
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def crawl_delay(robots_text: str, agent: str) -> float | None:
    """The `Crawl-delay` (seconds) robots.txt sets for `agent`: from the groups naming it (matched
    as `urllib.robotparser` matches the rules), else from `User-agent: *`; None without one."""
    agent = agent.lower()
    named: float | None = None
    anyone: float | None = None
    named_group = False
    agents: list[str] = []
    in_rules = False
    for raw in robots_text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if ":" not in line:
            continue
        name, value = (part.strip() for part in line.split(":", 1))
        name = name.lower()
        if name == "user-agent":
            if in_rules:  # a user-agent line after rules starts the next group
                agents, in_rules = [], False
            product = value.lower()
            agents.append(product)
            named_group = named_group or (product != "*" and product in agent)
            continue
        in_rules = True
        if name != "crawl-delay":
            continue
        try:
            delay = float(value)
        except ValueError:
            continue
        if not math.isfinite(delay) or delay < 0:
            continue
        if named is None and any(a != "*" and a in agent for a in agents):
            named = delay
        if anyone is None and "*" in agents:
            anyone = delay
    return named if named_group else anyone


class OriginRateLimit:
    """The request slots of one origin. `reserve()` is synchronous, so a caller can decide on a
    slot's time (say, against a deadline) before it waits for it with `take()`."""

    def __init__(self, url: str, requests_per_second: float | None, *, resume_at: float | None = None) -> None:
        self.origin = origin_of(url)
        self.requested = requests_per_second
        self.crawl_delay: float | None = None  # robots.txt's, when respected: set_crawl_delay()
        now = time.monotonic()
        # A continuation goes on from where the last invocation left the next slot (wall clock).
        self._next = now + max(0.0, min(MAX_INTERVAL_S, resume_at - time.time())) if resume_at else now
        self._last: float | None = None  # the last slot reserved
        self._released: float | None = None  # when the last request was let go
        self._prepaid: set[Any] = set()  # tabs whose next navigation already has its slot

    @property
    def interval(self) -> float:
        interval = 1 / self.requested if self.requested else 0.0
        return max(interval, min(self.crawl_delay or 0.0, MAX_INTERVAL_S))

    def set_crawl_delay(self, delay: float | None) -> None:
        """robots.txt's Crawl-delay: from now on, also the gap after the last request (robots.txt's own)."""
        self.crawl_delay = delay
        last = max(self._last or 0.0, self._released or 0.0)
        if last:
            self._next = max(self._next, last + self.interval)

    def covers(self, url: str) -> bool:
        return origin_of(url) == self.origin

    def next_slot(self) -> float:
        """When the next request could go (time.monotonic()), without taking the slot."""
        return max(time.monotonic(), self._next)

    def reserve(self) -> float:
        """Take the next slot; returns its time."""
        at = self.next_slot()
        self._next = at + self.interval
        self._last = at
        return at

    async def take(self, at: float) -> None:
        """Wait for the slot reserved at `at`. A slot's task the event loop runs late must not bring
        the next one closer: each request also goes at least an interval after the last one went."""
        while True:  # the interval may also have grown meanwhile (robots.txt's Crawl-delay)
            delay = max(at, (self._released or 0.0) + self.interval) - time.monotonic()
            if delay <= 0:
                break
            await asyncio.sleep(delay)
        now = time.monotonic()
        self._released = now
        self._next = max(self._next, now + self.interval)

    async def wait(self) -> None:
        """Reserve the next slot and wait for it."""
        await self.take(self.reserve())

    @contextlib.contextmanager
    def prepaid(self, page: Any) -> Iterator[None]:
        """Around the crawler's own navigation of `page`, whose slot it has taken (and waited for):
        the request guard lets that tab's next document request through without another."""
        self._prepaid.add(page)
        try:
            yield
        finally:
            self._prepaid.discard(page)

    @contextlib.asynccontextmanager
    async def navigation(self, page: Any, url: str) -> AsyncIterator[None]:
        """Take and wait for a slot for navigating `page` to `url` (if `url` is of the origin)."""
        if not self.covers(url):
            yield
            return
        await self.wait()
        with self.prepaid(page):
            yield

    async def admit(self, request: Any) -> None:
        """In the request guard: a document request to the origin that the crawler did not take a
        slot for (an iframe, a page navigating itself, a form submitted) waits for one here."""
        if request.resource_type != "document" or not self.covers(request.url):
            return
        page = None
        with contextlib.suppress(Exception):  # a detached frame has no page: it waits like any other
            frame = request.frame
            page = frame.page if frame.parent_frame is None else None
        if page is not None and page in self._prepaid:
            self._prepaid.discard(page)  # the slot is used: the tab's next navigation takes its own
            return
        await self.wait()

    def resume_at(self) -> float | None:
        """The next slot as wall-clock time, for a continuation (None when it is free now)."""
        ahead = self._next - time.monotonic()
        return time.time() + ahead if ahead > 0 else None

    def describe(self) -> dict[str, Any]:
        """What the result records: the effective limit, what was asked, robots.txt's delay."""
        interval = self.interval
        shown: dict[str, Any] = {
            "max_requests_per_second": round(1 / interval, 4) if interval else None,
            "requested": self.requested,
        }
        if self.crawl_delay is not None:
            shown["crawl_delay"] = self.crawl_delay
        return shown
