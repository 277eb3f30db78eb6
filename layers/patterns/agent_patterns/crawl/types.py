"""The crawl contract: CrawlConfig in, CrawlResult out (ARCHITECTURE.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent_patterns.crawl.politeness import MAX_REQUESTS_PER_SECOND, MIN_REQUESTS_PER_SECOND

MAX_PAGES_LIMIT = 100
PAGE_TIMEOUT_S = 30.0
TOTAL_TIME_LIMIT_S = 30 * 60.0


@dataclass(frozen=True)
class AuthConfig:
    """A login to run before the crawl. The password (or the ARN of a secret holding it) is
    used only to fill the form: never logged, never part of a result or an event."""

    login_url: str
    username: str
    password: str | None = field(default=None, repr=False)
    password_secret_arn: str | None = None
    username_selector: str = "input[name=username], input[type=email], input[name=email]"
    password_selector: str = "input[type=password]"  # noqa: S105 - a CSS selector
    submit_selector: str = "button[type=submit], input[type=submit]"
    success_selector: str | None = None
    success_url_contains: str | None = None
    timeout_s: float = 15.0


@dataclass(frozen=True)
class PageLimits:
    """What one page may contribute: a page of 150,000 links or a 20 MB title is cut here (and
    the record says so), so results, events and checkpoints stay small."""

    links: int = 1000
    forms: int = 50
    fields: int = 100  # per form
    text_chars: int = 1000  # a title, an action URL, a field name
    url_chars: int = 4096
    markdown_bytes: int = 200_000  # the page's Markdown, UTF-8
    html_chars: int = 2_000_000  # the rendered HTML the Markdown is made from (readability: ~2 s per 1M)

    def as_js(self) -> dict[str, int]:
        return {
            "links": self.links,
            "forms": self.forms,
            "fields": self.fields,
            "textChars": self.text_chars,
            "urlChars": self.url_chars,
        }


@dataclass(frozen=True)
class CrawlConfig:
    url: str
    max_pages: int = MAX_PAGES_LIMIT
    auth_config: AuthConfig | None = None
    # HTTP (basic/digest) credentials for the start URL's origin only; never part of a result.
    http_credentials: tuple[str, str] | None = field(default=None, repr=False)
    concurrency: int = 6
    page_timeout_s: float = PAGE_TIMEOUT_S
    total_time_limit_s: float = TOTAL_TIME_LIMIT_S
    block_resources: tuple[str, ...] = ("image", "font", "media")
    limits: PageLimits = field(default_factory=PageLimits)
    # Non-public hosts the crawler may reach (`host` or `host:port`): for tests and intranets.
    # Empty by default; everything not named here must resolve to public addresses.
    allowed_private_hosts: tuple[str, ...] = ()
    # Continuation across invocations: stop launching pages at this time.monotonic() value,
    # and pick up from a previous result's `continuation`.
    stop_at: float | None = None
    resume_state: dict[str, Any] | None = None
    # Called after each page with (url, pages_crawled, page record or None): progress events.
    on_page: Any = None
    # Politeness and scope: robots.txt honoured unless turned off; glob patterns on URL paths.
    respect_robots: bool = True
    use_sitemap: bool = True  # seed the frontier from the site's sitemap.xml (or robots.txt's Sitemap:)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # Requests per second to the crawled origin (crawl/politeness.py); None: no limit but
    # robots.txt's Crawl-delay (the API always sets one: CRAWL_ORIGIN_MAX_RPS by default).
    max_requests_per_second: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_pages <= MAX_PAGES_LIMIT:
            raise ValueError(f"max_pages must be between 1 and {MAX_PAGES_LIMIT}, got {self.max_pages}")
        if not 1 <= self.concurrency <= 16:
            raise ValueError(f"concurrency must be between 1 and 16, got {self.concurrency}")
        rate = self.max_requests_per_second
        if rate is not None and not MIN_REQUESTS_PER_SECOND <= rate <= MAX_REQUESTS_PER_SECOND:  # NaN too
            raise ValueError(
                f"max_requests_per_second must be between {MIN_REQUESTS_PER_SECOND:g} and"
                f" {MAX_REQUESTS_PER_SECOND:g}, got {rate}"
            )


@dataclass
class CrawlResult:
    pages_crawled: int
    forms_found: int
    links_found: int
    crawl_data: dict[str, Any]
    error_message: str | None = None
    # Set when the crawl stopped for time before finishing: pass it back as resume_state.
    continuation: dict[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        return self.error_message is None and self.continuation is None

    def summary(self) -> dict[str, Any]:
        return {
            "pages_crawled": self.pages_crawled,
            "forms_found": self.forms_found,
            "links_found": self.links_found,
            "blocked": len(self.crawl_data.get("blocked", [])),
            "skipped": len(self.crawl_data.get("skipped", [])),
        }
