"""Browser crawls of a web app: discover pages, forms and links, safely (public addresses only)."""

from agent_patterns.crawl.engine import run_crawl
from agent_patterns.crawl.types import AuthConfig, CrawlConfig, CrawlResult

__all__ = ["AuthConfig", "CrawlConfig", "CrawlResult", "run_crawl"]
