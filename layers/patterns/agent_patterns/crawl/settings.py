"""Settings of the crawl functions (API and worker)."""

from __future__ import annotations

from pydantic import Field

from agent_patterns.config import FunctionSettings, settings_of
from agent_patterns.crawl.politeness import MAX_REQUESTS_PER_SECOND, MIN_REQUESTS_PER_SECOND
from agent_patterns.crawl.types import PageLimits

_LIMITS = PageLimits()


class CrawlSettings(FunctionSettings):
    """Queue, egress policy, concurrency and browser of the crawler."""

    crawl_queue_url: str | None = Field(None, description="SQS queue of crawl jobs; unset locally: in-process.")
    crawl_allowed_private_hosts_unsafe: str = Field(
        "", description="Comma-separated host or host:port the crawler may reach although not public."
    )
    crawl_concurrency: int = Field(6, ge=1, le=16, description="Pages crawled in parallel per run.")
    crawl_origin_max_rps: float = Field(
        5.0,
        ge=MIN_REQUESTS_PER_SECOND,
        le=MAX_REQUESTS_PER_SECOND,
        description="Requests per second a crawl sends the site's origin when the request names no"
        " `max_requests_per_second` (robots.txt's Crawl-delay may slow it further).",
    )
    crawl_invocation_margin_seconds: float = Field(
        60.0, ge=5, description="Stop starting pages this long before the invocation's time runs out."
    )
    crawl_max_links_per_page: int = Field(
        _LIMITS.links, ge=1, description="Distinct links kept per page (more: the page is listed as truncated)."
    )
    crawl_max_forms_per_page: int = Field(_LIMITS.forms, ge=1, description="Forms kept per page.")
    crawl_max_fields_per_form: int = Field(_LIMITS.fields, ge=1, description="Fields kept per form.")
    crawl_max_text_chars: int = Field(
        _LIMITS.text_chars, ge=16, description="Characters kept of a title, a form or field name."
    )
    crawl_max_markdown_bytes: int = Field(
        _LIMITS.markdown_bytes,
        ge=1024,
        description="Bytes of a page's Markdown kept (UTF-8); more is cut at a line end, the page listed as truncated.",
    )
    chromium_path: str | None = Field(
        None, description="Chromium binary to launch (default: Playwright's, else the system's)."
    )
    playwright_browsers_path: str | None = Field(
        None, description="Where Playwright's browsers are installed (default `~/.cache/ms-playwright`)."
    )

    @property
    def page_limits(self) -> PageLimits:
        return PageLimits(
            links=self.crawl_max_links_per_page,
            forms=self.crawl_max_forms_per_page,
            fields=self.crawl_max_fields_per_form,
            text_chars=self.crawl_max_text_chars,
            markdown_bytes=self.crawl_max_markdown_bytes,
        )

    @property
    def crawl_allowed_private_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip() for h in self.crawl_allowed_private_hosts_unsafe.split(",") if h.strip())


def crawl_settings() -> CrawlSettings:
    return settings_of(CrawlSettings)
