"""The page shapes of tests/pages served as a site: `/` links to each of them, to `/big` (a long
article) and to `/changing` (an article whose text changes only when the test says so; its footer
and its form token change on every request, as a real page's do)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tests.pages.cases import CASES, PAGES

BIG_PARAGRAPHS = 400


@dataclass
class Edition:
    """What /changing says: bump `number` to change its content."""

    number: int = 1


def big_page() -> str:
    paragraphs = "\n".join(
        f"<p>Paragraph {i}: the archive keeps every report the committee published, one per quarter.</p>"
        for i in range(BIG_PARAGRAPHS)
    )
    return (
        "<!doctype html><html lang='en'><head><title>Archive</title></head><body>"
        f"<nav><a href='/'>Home</a></nav><main><h1>The complete archive</h1>{paragraphs}"
        "<pre><code>the end</code></pre></main></body></html>"
    )


def pages_site() -> tuple[Starlette, Edition]:
    edition = Edition()
    requests = itertools.count()

    async def index(request: Request) -> Response:
        paths = [f"/{case.file}" for case in CASES] + ["/big", "/changing"]
        links = "".join(f'<li><a href="{path}">{path}</a></li>' for path in paths)
        return HTMLResponse(
            f"<!doctype html><html><head><title>Pages</title></head><body><ul>{links}</ul></body></html>"
        )

    async def big(request: Request) -> Response:
        return HTMLResponse(big_page())

    async def changing(request: Request) -> Response:
        n = next(requests)
        return HTMLResponse(
            "<!doctype html><html lang='en'><head><title>Status</title></head><body>"
            "<header><nav><a href='/'>Home</a> <a href='/status'>Status</a></nav></header>"
            f"<main><article><h1>Service status</h1><p>Edition {edition.number}: all regions are serving"
            " traffic normally. The next maintenance window opens on Saturday at 02:00 UTC and lasts"
            " two hours; writes are paused during the first ten minutes.</p>"
            f"<form method='post'><input type='hidden' name='csrf' value='token-{n}'></form></article></main>"
            f"<footer>Page generated in {n % 7 + 1} ms, request {n}.</footer></body></html>"
        )

    routes = [
        Route("/", index),
        Route("/big", big),
        Route("/changing", changing),
        Mount("/", StaticFiles(directory=PAGES)),
    ]
    return Starlette(routes=routes), edition
