"""The benchmark site: 300 generated pages, five links and a form each, a few KB of text.

BENCH_DELAY_MS=200 uvicorn crawl_site:app --port 8101
"""

import asyncio
import os
import random

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

PAGES = 300
DELAY_S = int(os.environ.get("BENCH_DELAY_MS", "0")) / 1000
rng = random.Random(7)
LINKS = {i: [rng.randrange(PAGES) for _ in range(5)] for i in range(PAGES)}
WORDS = ["agent", "lambda", "crawl", "vector", "budget", "stream", "tenant", "browser", "cache", "event"]
TEXT = {i: " ".join(rng.choice(WORDS) for _ in range(600)) for i in range(PAGES)}


async def page(request):  # type: ignore[no-untyped-def]
    n = int(request.path_params.get("n", 0)) % PAGES
    if DELAY_S:
        await asyncio.sleep(DELAY_S)
    links = "".join(f'<li><a href="/p/{m}">Page {m}</a></li>' for m in LINKS[n])
    form = (
        f'<form action="/search" method="get"><input name="q" required><input type="hidden" name="from" '
        f'value="{n}"><button>Go</button></form>'
    )
    return HTMLResponse(
        f"<!doctype html><title>Page {n}</title><h1>Page {n}</h1><ul>{links}</ul>{form}<p>{TEXT[n]}</p>"
    )


app = Starlette(routes=[Route("/", page), Route("/p/{n}", page)])
