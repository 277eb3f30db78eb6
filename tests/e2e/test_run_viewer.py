"""The run viewer page in real headless Chromium (Playwright), following a live run over SSE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

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
