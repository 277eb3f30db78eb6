"""A crawled page as LLM-ready Markdown: its main content, its language and a content hash.

The browser hands over the rendered page (`source.js`: a copy of the live DOM, so what scripts
built is there, without scripts, styles, `<noscript>`, SVG, buttons and form controls, with
links made absolute). readability-lxml keeps the main content: navigation, sidebars, footers,
cookie banners, comments and "related" boxes go. html-to-markdown writes it as Markdown: ATX
headings, fenced code with its language, pipe tables, nested lists, inline links; images are
left out. The page's main heading is put back on top when readability took it for page chrome
(an `<h1>` in an article's `<header>`). Chosen by measuring against trafilatura, markdownify and
html2text on real page shapes: bench/markdown.py, figures in bench/README.md.

Both libraries are imported here only, when a crawl starts (`warm_up`) or converts a page.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_patterns.crawl.language import declared_language, detect_language

SOURCE_JS = (Path(__file__).with_name("source.js")).read_text(encoding="utf-8")

_FENCE = re.compile(r"^ {0,3}(```|~~~)", re.M)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # lxml takes no NUL or control characters


@dataclass(frozen=True)
class PageText:
    markdown: str
    lang: str | None  # BCP 47 as the page declares it, else ISO 639-1 as detected, else None
    content_hash: str  # sha256 of `markdown` (UTF-8), hex
    truncated: bool  # `markdown` was cut to the cap


# Class or id words that tell readability a block is content (docs callouts: short, and often
# mostly a link, which would otherwise get them dropped) or is not (consent and sign-up boxes).
POSITIVE = ("admonition", "callout", "markdown-alert")
NEGATIVE = ("cookie", "consent", "gdpr", "newsletter", "social")
# A footer's copyright line: "© 2026 ...", "Copyright © 2019-2026 ..." (a photo credit has no year).
COPYRIGHT = re.compile(r"©\s*(19|20)\d\d")
COPYRIGHT_LINE_CHARS = 300


def main_content(html: str) -> str:
    """The HTML of the page's main content; the whole page when readability cannot take it.

    A short block with a copyright line in it is a footer readability kept (on pages of bare
    `<div>`s the footer can sit inside the block it picks): it goes."""
    from lxml.html import fragment_fromstring, tostring
    from readability import Document

    try:
        summary = Document(html, positive_keywords=POSITIVE, negative_keywords=NEGATIVE).summary(html_partial=True)
        root = fragment_fromstring(summary, create_parent="div")
    except Exception:  # readability and lxml refuse some markup (no <body>, odd nesting)
        return html
    for el in list(root.iter("p", "div", "footer", "section", "small")):
        text = el.text_content()
        if len(text) < COPYRIGHT_LINE_CHARS and COPYRIGHT.search(text) and el.getparent() is not None:
            el.drop_tree()
    return str(tostring(root, encoding="unicode"))


def warm_up() -> None:
    """Import the libraries (~0.4 s, chardet the most) before the first page needs them:
    run_crawl does it in a thread while Chromium starts."""
    import html_to_markdown  # noqa: F401
    import readability  # noqa: F401


def to_markdown(html: str) -> str:
    from html_to_markdown import ConversionOptions, PreprocessingOptions, convert

    options = ConversionOptions(
        bullets="-",
        compact_tables=True,  # no padding: the same table, fewer tokens
        skip_images=True,
        extract_metadata=False,
        preprocessing=PreprocessingOptions(enabled=False),
    )
    return str(convert(html, options).content)


def _with_heading(markdown: str, heading: str) -> str:
    """`markdown` starting with `# heading` when it has no top-level heading of its own."""
    heading = " ".join(heading.split())
    if not heading:
        return markdown
    in_code = False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
        elif not in_code and line.startswith("# "):
            return markdown
    return f"# {heading}\n\n{markdown}".strip()


def cap(markdown: str, max_bytes: int) -> tuple[str, bool]:
    """At most `max_bytes` of UTF-8, cut at a line end where there is one in the second half,
    never inside a character; an open code fence is closed (within the cap)."""
    data = markdown.encode()
    if len(data) <= max_bytes:
        return markdown, False
    cut = data[: max(0, max_bytes - 4)]  # room to close a fence: "\n```"
    newline = cut.rfind(b"\n")
    if newline > len(cut) // 2:
        cut = cut[:newline]
    text = cut.decode(errors="ignore").rstrip()
    if len(_FENCE.findall(text)) % 2:
        text += "\n```"
    return text, True


def page_text(html: str, declared: str, heading: str, max_bytes: int) -> PageText:
    """Markdown, language and hash of one rendered page (CPU only: run it off the event loop)."""
    html = _CONTROL.sub("", html)
    markdown = to_markdown(main_content(html)) if html.strip() else ""
    markdown = _with_heading(markdown.strip(), heading)
    markdown, truncated = cap(markdown, max_bytes)
    lang = declared_language(declared) or detect_language(markdown)
    return PageText(markdown, lang, hashlib.sha256(markdown.encode()).hexdigest(), truncated)


def page_text_from(source: dict[str, Any], max_bytes: int) -> PageText:
    """`page_text` of what SOURCE_JS returned."""
    return page_text(str(source["html"]), str(source["lang"]), str(source["heading"]), max_bytes)
