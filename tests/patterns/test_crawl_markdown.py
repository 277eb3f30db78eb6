"""LLM-ready pages: each crawled page's main content as Markdown, its language and a content
hash, through the real crawler in Chromium on the page shapes of tests/pages."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agent_patterns.crawl import CrawlConfig, CrawlResult, run_crawl
from agent_patterns.crawl.language import declared_language, detect_language
from agent_patterns.crawl.markdown import cap
from agent_patterns.crawl.types import PageLimits
from tests.conftest import LiveServer
from tests.pages.cases import CASES, Case, score
from tests.pages.site import BIG_PARAGRAPHS, Edition, pages_site


@dataclass
class Site:
    base: str
    edition: Edition
    host: str

    def config(self, path: str = "/", **kw: Any) -> CrawlConfig:
        defaults: dict[str, Any] = {
            "url": self.base + path,
            "allowed_private_hosts": (self.host,),
            "page_timeout_s": 10,
            "concurrency": 4,
        }
        return CrawlConfig(**{**defaults, **kw})

    def crawl(self, path: str = "/", **kw: Any) -> CrawlResult:
        result = asyncio.run(run_crawl(self.config(path, **kw)))
        assert result.succeeded, result.error_message
        return result


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    app, edition = pages_site()
    with LiveServer(app) as live:
        yield Site(live.url, edition, f"127.0.0.1:{live.port}")


CAP = 8192  # bytes of Markdown kept per page: more than any page shape has, less than /big


@pytest.fixture(scope="module")
def crawled(site: Site) -> CrawlResult:
    """One crawl of `/` and of every page it links to: the page shapes, /big and /changing."""
    return site.crawl(max_pages=len(CASES) + 3, limits=PageLimits(markdown_bytes=CAP))


@pytest.fixture(scope="module")
def pages(crawled: CrawlResult) -> dict[str, dict[str, Any]]:
    """The crawled pages by the last part of their path."""
    return {p["url"].rsplit("/", 1)[-1]: p for p in crawled.crawl_data["pages"]}


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_each_page_shape_keeps_its_main_content_and_drops_the_chrome(
    case: Case, pages: dict[str, dict[str, Any]], site: Site
) -> None:
    page = pages[case.file]
    result = score(page["markdown"], case, site.base)
    assert not result.missing, f"missing from {case.file}:\n{result.missing}\n---\n{page['markdown']}"
    assert not result.leaked, f"leaked into {case.file}:\n{result.leaked}\n---\n{page['markdown']}"
    assert page["title"] == case.title
    assert page["lang"] == case.lang  # declared (blog: en-GB), else detected (lists: en, news_de: de)
    assert page["content_hash"] == hashlib.sha256(page["markdown"].encode()).hexdigest()
    assert "truncated" not in page


def test_links_and_forms_are_still_collected(pages: dict[str, dict[str, Any]], site: Site) -> None:
    docs = pages["docs.html"]
    assert site.base + "/docs/faq" in docs["links"]  # the sidebar: not content, still a link to follow
    blog = pages["blog.html"]
    assert {f["action"] for f in blog["forms"]} >= {site.base + "/subscribe"}


def test_script_rendered_content_comes_from_the_rendered_page(pages: dict[str, dict[str, Any]], site: Site) -> None:
    served = httpx.get(site.base + "/spa.html").text
    assert "Chatterbox" not in served  # the server sends an empty shell...
    spa = pages["spa.html"]
    assert "Offline mode keeps the last 500 messages on the device." in spa["markdown"]  # ...the browser built this
    assert spa["title"] == "Release 4.2 · Chatterbox"


def test_a_page_over_the_markdown_cap_is_cut_at_a_line_and_says_so(
    crawled: CrawlResult, pages: dict[str, dict[str, Any]], site: Site
) -> None:
    page = pages["big"]
    markdown = page["markdown"]
    assert CAP - 200 < len(markdown.encode()) <= CAP
    assert markdown.startswith("# The complete archive\n\nParagraph 0: ")
    assert markdown.endswith("one per quarter.")  # whole paragraphs only
    assert f"Paragraph {BIG_PARAGRAPHS - 1}:" not in markdown
    assert page["truncated"] == ["markdown"]
    assert {"url": site.base + "/big", "what": ["markdown"]} in crawled.crawl_data["truncated"]
    assert page["content_hash"] == hashlib.sha256(markdown.encode()).hexdigest()


def test_the_content_hash_holds_until_the_content_changes(pages: dict[str, dict[str, Any]], site: Site) -> None:
    def crawl() -> dict[str, Any]:
        page: dict[str, Any]
        (page,) = site.crawl("/changing", max_pages=1).crawl_data["pages"]
        return page

    first = pages["changing"]
    again = crawl()  # a second crawl: the footer and the form token differ, they are not content
    assert again["content_hash"] == first["content_hash"] and again["markdown"] == first["markdown"]
    assert "Edition 1: all regions" in first["markdown"] and "request" not in first["markdown"]
    site.edition.number = 2
    try:
        changed = crawl()
    finally:
        site.edition.number = 1
    assert changed["content_hash"] != first["content_hash"] and "Edition 2: all regions" in changed["markdown"]


def test_the_cap_never_splits_a_character_and_closes_an_open_code_block() -> None:
    text = "é" * 100
    cut, truncated = cap(text, 51)
    assert truncated and len(cut.encode()) <= 51 and cut == "é" * 23  # 4 bytes kept for a closing fence
    code = "intro\n\n```python\n" + "x = 1\n" * 100 + "```\n"
    cut, truncated = cap(code, 200)
    assert truncated and len(cut.encode()) <= 200 and cut.endswith("x = 1\n```")
    assert cap("short", 200) == ("short", False)


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("The committee met on Tuesday and decided that the new bridge will be built by the end of the year.", "en"),
        ("Der Ausschuss hat am Dienstag beschlossen, dass die neue Brücke bis zum Ende des Jahres gebaut wird.", "de"),
        ("Le comité s'est réuni mardi et a décidé que le nouveau pont sera construit avant la fin de l'année.", "fr"),
        (
            "El comité se reunió el martes y decidió que el nuevo puente se construirá antes de que termine el año.",
            "es",
        ),
        ("Комитет собрался во вторник и решил, что новый мост будет построен до конца года, и это так.", "ru"),
        ("委員会は火曜日に会合を開き、新しい橋を年末までに建設することを決めました。", "ja"),
        ("委员会周二开会，决定在年底前建成新桥。这对城市很重要。", "zh"),
        ("```\nprint('x')\n```\nOK", None),  # too little prose to tell
    ],
)
def test_the_language_of_an_undeclared_page_is_detected(text: str, lang: str | None) -> None:
    assert detect_language(text) == lang


def test_declared_languages_are_normalized_tags() -> None:
    assert declared_language(" EN_us ") == "en-US" and declared_language("zh-hant-tw") == "zh-Hant-TW"
    assert declared_language("") is None and declared_language("{{ lang }}") is None
