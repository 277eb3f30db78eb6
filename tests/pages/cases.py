"""Real-world page shapes (the HTML files beside this module) and what their Markdown must and
must not contain. Shared by the crawl tests (tests/patterns/test_crawl_markdown.py) and the
library comparison (bench/markdown.py).

A check is a plain string, or a regular expression when it starts with `re:`. `{base}` stands for
the origin the pages are served from. Markdown is compared after collapsing runs of spaces
(column padding is not content) and dropping backslash escapes (`pg\\_partman` reads as
`pg_partman`). A table row matches a whole line, with or without its outer pipes (GFM).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PAGES = Path(__file__).resolve().parent

# A separator row of a Markdown table: | --- | :---: | ... (GFM: the outer pipes are optional)
TABLE_RULE = r"re:(?m)^\|? ?:?-{3,}:? ?(\| ?:?-{3,}:? ?)+\|?$"


@dataclass(frozen=True)
class Case:
    file: str
    title: str
    lang: str  # as the crawler reports it: <html lang>, else detected
    must: tuple[str, ...]
    must_not: tuple[str, ...]


CASES = (
    Case(
        "docs.html",
        "Configuration · Widgetry Docs",
        "en",
        must=(
            r"re:(?m)^# Configuration$",
            r"re:(?m)^## The configuration file$",
            r"re:(?m)^## Loading from Python$",
            "Widgetry reads its settings from `widgetry.toml` in the working directory.",
            r"re:```[a-z]*\n\[server\]\nport = 8080\nworkers = 4\n```",
            r"re:```[a-z]*\nfrom widgetry import load_config\n\nconfig = load_config\(\"widgetry.toml\"\)\nprint\(config.server.port\)\n```",
            "| Option | Default | Description |",
            "| port | 8080 | TCP port to listen on |",
            "| timeout | 30 | Seconds before a request is abandoned |",
            TABLE_RULE,
            "[the deployment guide]({base}/docs/deploy)",
        ),
        must_not=(
            "Skip to main content",
            "Star us on GitHub",
            "Toggle dark mode",
            "Troubleshooting FAQ",
            "Metrics and tracing",
            "Next: Deploying to production",
            "On this page",
            "Copy to clipboard",
            "Join our Discord",
            "Built with DocsGen",
        ),
    ),
    Case(
        "blog.html",
        "Why we moved our job queue to Postgres | Acme Engineering",
        "en-GB",
        must=(
            r"re:(?m)^# Why we moved our job queue to Postgres$",
            r"re:(?m)^## What we had$",
            r"re:(?m)^## How the new queue works$",
            "For five years our background jobs lived in a dedicated message broker.",
            "[SELECT … FOR UPDATE SKIP LOCKED](https://www.postgresql.org/docs/current/sql-select.html)",
            r"re:(?m)^> The best queue is the one you already back up every night\.$",
            r"re:(?m)^ {0,3}1\. A job is a row in the (\*\*|__)jobs(\*\*|__) table\.$",
            r"re:(?m)^ {0,3}\d\. When the job ends, the row is deleted",
            "Median latency from enqueue to start fell from 40 ms to 9 ms",
        ),
        must_not=(
            "We use cookies to improve your experience",
            "Accept all cookies",
            "Manage preferences",
            "Careers at Acme",
            "Share on LinkedIn",
            "Subscribe to our newsletter",
            "How we sharded our billing database",
            "Great post! We did the same migration",
            "run_after column",
            "Press kit",
            "All rights reserved",
        ),
    ),
    Case(
        "spa.html",
        "Release 4.2 · Chatterbox",
        "en",
        must=(
            r"re:(?m)^# What's new in Chatterbox 4\.2$",
            "This release focuses on reliability on flaky mobile networks.",
            "[upgrade notes]({base}/docs/upgrading)",
            "| Kind | Change |",
            "| Fixed | Push notifications arrive once, not twice, after a reconnect. |",
            TABLE_RULE,
            r"re:(?m)^## Known issues$",
            r"re:(?m)^ {0,3}[-*+] Attachments over 2 GB still fail to upload on iOS\.$",
        ),
        must_not=(
            "You need to enable JavaScript",
            "Account preferences",
            "all systems operational",
        ),
    ),
    Case(
        "table.html",
        "Nordic capitals by population – Open Stats",
        "en",
        must=(
            r"re:(?m)^# Nordic capitals by population$",
            "| City | Country | Population | Area (km²) |",
            "| Stockholm | Sweden | 984,748 | 188 |",
            "| Reykjavík | Iceland | 139,875 | 273 |",
            TABLE_RULE,
            "[Download CSV]({base}/datasets/nordic-capitals.csv)",
            "Figures are for the municipality, not the metropolitan area.",
        ),
        must_not=(
            "Developer API",
            "Filter datasets",
            "Apply filters",
            "Economy (214)",
            "run by volunteers",
        ),
    ),
    Case(
        "lists.html",
        "Postgres extensions we rely on",
        "en",
        must=(
            r"re:(?m)^# Postgres extensions we rely on$",
            "Ask in [#databases](https://chat.example.com/c/databases) before adding another one.",
            # A nested item: right under its parent (a blank line between is allowed), indented
            # past the parent's marker.
            r"re:(?m)^( {0,3})[-*+] \[pgvector\]\(https://github\.com/pgvector/pgvector\) for embeddings\n\n?"
            r"\1 {2,4}[-*+] HNSW indexes for the \[search service\]\({base}/handbook/search\)$",
            r"re:(?m)^( {0,3})[-*+] \[pg_partman\]\(https://github\.com/pgpartman/pg_partman\) for time-based"
            r" partitions\n\n?\1 {2,4}[-*+] Events are partitioned by day$",
            r"re:(?m)^( *)[-*+] Events are partitioned by day\n\n?\1 {2,4}[-*+] Partitions older than 90 days are detached$",
            r"re:(?m)^ {0,3}1\. Read the extension's release notes\.$",
            r"re:(?m)^( {0,3})2\. Upgrade it on the staging replica:\n\n?\1 {3,4}1\. Run `ALTER EXTENSION … UPDATE`\.\n"
            r"\1 {3,4}2\. Run the \[smoke tests\]\({base}/handbook/smoke-tests\)\.$",
        ),
        must_not=(
            "Onboarding checklist",
            "On-call runbook",
            "Maintained by the platform team",
        ),
    ),
    Case(
        "news_de.html",
        "Stadtrat beschließt neue Radwege",
        "de",
        must=(
            r"re:(?m)^# Stadtrat beschließt neue Radwege$",
            "zwölf Kilometer neue Radwege zu bauen.",
            r"re:(?m)^## Kritik von der Opposition$",
            "[Ringstraße]({base}/artikel/ringstrasse)",
        ),
        must_not=(
            "Wir und unsere Partner verwenden Cookies",
            "Alle akzeptieren",
            "Jetzt abonnieren",
            "Meistgelesen",
            "Sommerreifen",
            "Impressum",
        ),
    ),
)

_SPACES = re.compile(r"[ \t\u00a0]+")
_PIPE = re.compile(r" ?\| ?")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|<>~])")


def normalize(markdown: str) -> str:
    """Leading indentation is structure (nested lists): kept; other runs of spaces collapse, and
    a table's pipes get one space on each side (`a| b` is `a | b`)."""
    out = []
    for line in _ESCAPE.sub(r"\1", markdown).splitlines():
        stripped = line.lstrip(" ")
        text = _SPACES.sub(" ", stripped)
        if "|" in text:
            text = _PIPE.sub(" | ", text).strip()
        out.append(" " * (len(line) - len(stripped)) + text.rstrip() if text.strip() else "")
    return "\n".join(out)


def found(text: str, check: str, base: str) -> bool:
    """Whether `check` is in `text` (normalized Markdown). A table row (`| a | b |`) is a whole
    line, its outer pipes optional as in GFM."""
    if check.startswith("re:"):
        return re.search(check[3:].replace("{base}", re.escape(base)), text) is not None
    check = check.replace("{base}", base)
    if check.startswith("| ") and check.endswith(" |"):
        return re.search(rf"(?m)^\|? ?{re.escape(check[2:-2])} ?\|?$", text) is not None
    return check in text


@dataclass(frozen=True)
class Score:
    missing: tuple[str, ...]  # must-haves not found
    leaked: tuple[str, ...]  # must-nots found


def score(markdown: str, case: Case, base: str) -> Score:
    text = normalize(markdown)
    return Score(
        missing=tuple(c for c in case.must if not found(text, c, base)),
        leaked=tuple(c for c in case.must_not if found(text, c, base)),
    )
