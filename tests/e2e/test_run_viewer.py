"""The run viewer page in real headless Chromium (Playwright), following a live run over SSE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from agent_patterns.config import reset_settings
from agent_patterns.crawl.browser import BASE_ARGS, chromium_executable
from agent_patterns.runs import events
from agent_patterns.tenancy import issue_stream_token
from agent_patterns_dev.gateway import load_function
from tests.conftest import LiveServer

CHROMIUM_ARGS = list(BASE_ARGS)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(load_function("streaming").app) as live:
        yield live


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


async def open_viewer(browser: Browser, server: LiveServer, tenant: str = "acme") -> tuple[Page, str]:
    run_id = await events.create_run(tenant, "crawl")
    page = await browser.new_page()
    await page.goto(f"{server.url}/runs/{run_id}?token={issue_stream_token(tenant, run_id)}")
    return page, run_id


async def test_viewer_shows_progress_as_events_arrive(server: LiveServer, browser: Browser) -> None:
    page, run_id = await open_viewer(browser, server)
    await expect(page.locator("#status")).to_have_text("queued")
    await expect(page.locator("#connection")).to_have_text("live")
    for n in (1, 2, 3):
        url = f"https://app.example/page/{n}"
        await events.publish(run_id, "running", {"url": url, "pages_crawled": n, "max_pages": 10})
        await expect(page.locator("#pages")).to_have_text(str(n))  # shown as it arrives
        await expect(page.locator("#current")).to_have_text(url)
    await expect(page.locator("#status")).to_have_text("running")
    await expect(page.locator("#max-pages")).to_have_text("10")
    await events.publish(run_id, "complete", {"pages_crawled": 3, "forms_found": 2, "links_found": 17})
    await expect(page.locator("#status")).to_have_text("complete")
    await expect(page.locator("#totals")).to_contain_text("forms found: 2")
    await expect(page.locator("#connection")).to_have_text("closed")


async def test_viewer_shows_a_failed_run(server: LiveServer, browser: Browser) -> None:
    page, run_id = await open_viewer(browser, server)
    await events.publish(run_id, "error", {"message": "login failed: check the credentials"})
    await expect(page.locator("#status")).to_have_text("error")
    await expect(page.locator("#error")).to_have_text("login failed: check the credentials")


async def test_viewer_survives_dropped_connections_without_gaps_or_duplicates(
    server: LiveServer, browser: Browser, settings_env: pytest.MonkeyPatch
) -> None:
    # The server hangs up every 0.6 s; the browser reconnects with Last-Event-ID each time.
    settings_env.setenv("SSE_MAX_STREAM_SECONDS", "0.6")
    settings_env.setenv("SSE_RETRY_MS", "100")
    reset_settings()
    page, run_id = await open_viewer(browser, server)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/events" in r.url else None)
    await expect(page.locator("#status")).to_have_text("queued")
    total = 40
    for n in range(1, total + 1):
        await events.publish(
            run_id, "running", {"url": f"https://app.example/{n}", "pages_crawled": n, "max_pages": total}
        )
        await asyncio.sleep(0.06)
    await events.publish(run_id, "complete", {"pages_crawled": total})
    await expect(page.locator("#status")).to_have_text("complete", timeout=15_000)
    shown = await page.locator("#log li").evaluate_all("items => items.map(li => li.dataset.eventId).reverse()")
    published = [e.id for e in await events.replay(run_id)]
    assert shown == published  # every event once, in order
    assert len(requests) >= 3  # it really did reconnect
    await expect(page.locator("#pages")).to_have_text(str(total))


def row(page: Page, url: str, column: str) -> Any:
    return page.locator(f'#pages-table tr[data-url="{url}"] td[data-col="{column}"]')


async def test_viewer_lists_crawled_pages_in_a_table_as_events_arrive(server: LiveServer, browser: Browser) -> None:
    page, run_id = await open_viewer(browser, server)
    await expect(page.locator("#connection")).to_have_text("live")
    await expect(page.locator("#pages-section")).to_be_hidden()  # no page yet
    base = "https://app.example"
    shown = [
        (f"{base}/", {"status": 200, "title": "Home", "forms": 0}),
        (f"{base}/contact", {"status": 200, "title": "Contact us", "forms": 2}),
        (f"{base}/gone", {"status": 404, "title": "Not found", "forms": 0}),
        (f"{base}/slow", {"error": "timeout"}),
    ]
    for n, (url, info) in enumerate(shown, start=1):
        await events.publish(run_id, "running", {"url": url, "pages_crawled": n, "max_pages": 10, "page": info})
        await expect(page.locator("#pages-table tbody tr")).to_have_count(n)  # a row as each page arrives
    await expect(row(page, f"{base}/contact", "status")).to_have_text("200")
    await expect(row(page, f"{base}/contact", "title")).to_have_text("Contact us")
    await expect(row(page, f"{base}/contact", "forms")).to_have_text("2")
    await expect(row(page, f"{base}/gone", "status")).to_have_text("404")
    await expect(row(page, f"{base}/slow", "status")).to_have_text("timeout")
    await expect(row(page, f"{base}/", "url").locator("a")).to_have_attribute("href", f"{base}/")
    await expect(row(page, f"{base}/", "index")).to_be_hidden()  # not an indexing crawl: no index column
    assert await page.locator("#pages-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.url)") == [
        url for url, _ in shown
    ]


async def test_viewer_renders_hostile_page_data_as_text(server: LiveServer, browser: Browser) -> None:
    page, run_id = await open_viewer(browser, server)
    await expect(page.locator("#connection")).to_have_text("live")
    title = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    hostile_url = 'javascript:window.__pwned=3//"><img src=x onerror="window.__pwned=4">'
    await events.publish(
        run_id,
        "running",
        {"url": "https://evil.example/", "pages_crawled": 1, "max_pages": 2, "page": {"status": 200, "title": title}},
    )
    await events.publish(run_id, "running", {"url": hostile_url, "pages_crawled": 2, "max_pages": 2, "page": {}})
    await events.publish(run_id, "complete", {"pages_crawled": 2, "index": {"added": "<b>1</b>"}})
    await expect(page.locator("#status")).to_have_text("complete")
    await expect(row(page, "https://evil.example/", "title")).to_have_text(title)  # the markup, as text
    await expect(page.locator("#pages-table tbody tr")).to_have_count(2)
    cells = page.locator('#pages-table td[data-col="url"]')
    await expect(cells.nth(1)).to_have_text(hostile_url)
    assert await cells.nth(1).locator("a").count() == 0  # only http(s) URLs become links
    assert await page.locator("#pages-table img, #pages-table script, #pages-table b").count() == 0
    assert await page.evaluate("window.__pwned") is None
    await expect(page.locator("#index-summary")).to_be_hidden()  # a count that is not a number is not shown


async def test_viewer_shows_what_an_indexing_crawl_indexed(server: LiveServer, browser: Browser) -> None:
    page, run_id = await open_viewer(browser, server)
    await expect(page.locator("#connection")).to_have_text("live")
    base = "https://docs.example"

    async def page_done(n: int, path: str, info: dict[str, Any], **extra: Any) -> None:
        payload = {"url": base + path, "pages_crawled": n, "max_pages": 5, "page": info, **extra}
        await events.publish(run_id, "running", payload)

    await page_done(1, "/", {"status": 200, "title": "Docs", "forms": 0, "index": "queued"}, pages_indexed=0)
    await expect(row(page, f"{base}/", "index")).to_have_text("indexing…")
    await expect(row(page, f"{base}/", "index")).to_be_visible()  # an indexing crawl: the column shows
    outcome = [{"url": f"{base}/", "outcome": "added"}]
    await page_done(
        2, "/a", {"status": 200, "title": "A", "forms": 0, "index": "queued"}, pages_indexed=1, indexed=outcome
    )
    await expect(row(page, f"{base}/", "index")).to_have_text("added")
    await page_done(3, "/missing", {"status": 404, "title": "Missing", "forms": 0, "index": "skipped"}, pages_indexed=1)
    await expect(row(page, f"{base}/missing", "index")).to_have_text("not indexed")
    last = [{"url": f"{base}/a", "outcome": "unchanged"}]  # outcomes that finished after the last page
    await events.publish(
        run_id, "running", {"url": None, "pages_crawled": 3, "max_pages": 5, "pages_indexed": 2, "indexed": last}
    )
    await expect(row(page, f"{base}/a", "index")).to_have_text("unchanged")
    await expect(page.locator("#pages-indexed")).to_have_text("2")
    summary = {"added": 1, "changed": 0, "unchanged": 1, "failed": 0, "removed": 3}
    await events.publish(run_id, "complete", {"pages_crawled": 3, "forms_found": 0, "links_found": 4, "index": summary})
    await expect(page.locator("#status")).to_have_text("complete")
    for key, value in summary.items():
        await expect(page.locator(f'#index-summary span[data-key="{key}"]')).to_have_text(f"{key}: {value}")
    await expect(page.locator("#pages-table tbody tr")).to_have_count(3)
