"""Settings of the crawl functions (API and worker)."""

from __future__ import annotations

from pydantic import Field

from agent_patterns.config import FunctionSettings, settings_of


class CrawlSettings(FunctionSettings):
    """Queue, egress policy, concurrency and browser of the crawler."""

    crawl_queue_url: str | None = Field(None, description="SQS queue of crawl jobs; unset locally: in-process.")
    crawl_allowed_private_hosts_unsafe: str = Field(
        "", description="Comma-separated host or host:port the crawler may reach although not public."
    )
    crawl_concurrency: int = Field(6, ge=1, le=16, description="Pages crawled in parallel per run.")
    crawl_invocation_margin_seconds: float = Field(
        60.0, ge=5, description="Stop starting pages this long before the invocation's time runs out."
    )
    chromium_path: str | None = Field(
        None, description="Chromium binary to launch (default: Playwright's, else the system's)."
    )
    playwright_browsers_path: str | None = Field(
        None, description="Where Playwright's browsers are installed (default `~/.cache/ms-playwright`)."
    )

    @property
    def crawl_allowed_private_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip() for h in self.crawl_allowed_private_hosts_unsafe.split(",") if h.strip())


def crawl_settings() -> CrawlSettings:
    return settings_of(CrawlSettings)
