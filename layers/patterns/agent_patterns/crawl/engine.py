"""Breadth-first crawl of one origin with Playwright and Chromium.

One ordered frontier in BFS order, crawled by `concurrency` tabs of one browser. A page's
links join the frontier only once every page before it has finished, so the frontier's order
(and with `max_pages` the page set) is exactly that of a level-by-level BFS, whatever order
pages finish in; yet no tab waits for a level to end. Because the page set is deterministic,
a crawl cut short and continued in another invocation ends with exactly the pages an
uninterrupted crawl would have.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent_patterns.config import on_lambda
from agent_patterns.crawl.browser import BASE_ARGS
from agent_patterns.crawl.markdown import SOURCE_JS, page_text_from, warm_up
from agent_patterns.crawl.netguard import BLOCKED_HEADER, BlockedAddressError, BlockedRequest, EgressPolicy, EgressProxy
from agent_patterns.crawl.politeness import OriginRateLimit, crawl_delay
from agent_patterns.crawl.types import AuthConfig, CrawlConfig, CrawlResult
from agent_patterns.crawl.urls import dedup_key, fetch_url, is_http, same_origin

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page, Route

EXTRACT_JS = (Path(__file__).with_name("extract.js")).read_text(encoding="utf-8")
# Links and forms, and the DOM copy for Markdown, in one round trip to the page: each evaluate is a
# message through the driver and the browser, per page.
PAGE_JS = f"(args) => ({{ page: ({EXTRACT_JS.strip()})(args.limits), source: ({SOURCE_JS.strip()})(args.html_chars) }})"
MAX_SKIPPED = 1000


def launch_args(proxy_url: str) -> list[str]:
    args = [
        f"--proxy-server={proxy_url}",
        "--proxy-bypass-list=<-loopback>",  # Chromium otherwise sends loopback around the proxy
        "--disable-quic",
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
        "--webrtc-ip-handling-policy=disable_non_proxied_udp",
        *BASE_ARGS,
    ]
    if on_lambda():  # Lambda: no zygote, no multiprocess sandbox
        args += ["--single-process", "--no-zygote", "--disable-setuid-sandbox", "--in-process-gpu"]
    return args


@dataclass
class _State:
    """Everything a continuation needs; JSON-serializable."""

    order: list[dict[str, Any]]  # every entry {url, key, depth} ever enqueued, in BFS order
    expanded: int = 0  # entries of `order` whose links have joined the frontier
    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> page record
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {url, reason}
    seen: dict[str, str] = field(default_factory=dict)  # key -> the URL enqueued for it
    skipped: list[dict[str, str]] = field(default_factory=list)
    blocked: list[dict[str, str]] = field(default_factory=list)
    storage: dict[str, Any] | None = None
    elapsed_s: float = 0.0
    invocations: int = 0
    robots: dict[str, Any] | None = None  # {status, text?}: fetched once, kept across continuations
    sitemap: dict[str, Any] | None = None  # {status, url, seeded}: read once, on the first invocation
    rate_next_at: float | None = None  # the origin's next free request slot (unix time), if ahead

    @classmethod
    def start(cls, url: str) -> _State:
        key = dedup_key(url)
        return cls(order=[{"url": fetch_url(url), "key": key, "depth": 0}], seen={key: fetch_url(url)})

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def finished(self, key: str) -> bool:
        return key in self.done or key in self.failed


def _skip(state: _State, url: str, reason: str) -> None:
    if len(state.skipped) < MAX_SKIPPED and not any(s["url"] == url for s in state.skipped[-200:]):
        state.skipped.append({"url": url, "reason": reason})


def _expand(state: _State, config: CrawlConfig, start_url: str) -> int:
    """Add the links of finished pages to the frontier, strictly in frontier order; returns how
    many entries were added."""
    added = 0
    seen = state.seen
    while state.expanded < len(state.order) and state.finished(state.order[state.expanded]["key"]):
        entry = state.order[state.expanded]
        state.expanded += 1
        page = state.done.get(entry["key"])
        if page is None or page.get("redirected_off_origin"):
            continue
        for link in page["links"]:
            if not is_http(link):
                continue
            if not same_origin(link, start_url):
                _skip(state, link, "cross-origin")
                continue
            refused = _out_of_scope(link, config, state)
            if refused:
                _skip(state, link, refused)
                continue
            key = dedup_key(link)
            if key in seen:
                if seen[key] != link:  # another spelling of a page already queued
                    _skip(state, link, "duplicate")
                continue
            seen[key] = fetch_url(link)
            if len(state.order) >= config.max_pages:
                _skip(state, link, "limit reached")
                continue
            state.order.append({"url": fetch_url(link), "key": key, "depth": entry["depth"] + 1})
            added += 1
    return added


ROBOTS_AGENT = "agent-patterns"  # the product token robots.txt rules are matched against
ROBOTS_MAX_BYTES = 500_000
_robots_parsers: dict[str, Any] = {}  # robots.txt text -> its parser (a crawl parses its file once)


def _out_of_scope(link: str, config: CrawlConfig, state: _State) -> str | None:
    """Why `link` is not crawled (include/exclude patterns, robots.txt), or None."""
    from fnmatch import fnmatchcase
    from urllib.parse import urlsplit

    path = urlsplit(link).path or "/"
    if any(fnmatchcase(path, pattern) for pattern in config.exclude):
        return "excluded by pattern"
    if config.include and not any(fnmatchcase(path, pattern) for pattern in config.include):
        return "not included by pattern"
    robots = state.robots or {}
    if config.respect_robots and robots.get("text"):
        parser = _robots_parsers.get(robots["text"])
        if parser is None:
            from urllib.robotparser import RobotFileParser

            parser = RobotFileParser()
            parser.parse(robots["text"].splitlines())
            _robots_parsers.clear()  # one crawl at a time per process needs one
            _robots_parsers[robots["text"]] = parser
        if not parser.can_fetch(ROBOTS_AGENT, link):
            return "disallowed by robots.txt"
    return None


async def _fetch_robots(context: BrowserContext, config: CrawlConfig, limit: OriginRateLimit) -> dict[str, Any]:
    """The site's robots.txt, fetched through the same guarded browser as its pages. A 4xx means
    no rules; a 5xx or no answer is recorded and crawled without rules."""
    from urllib.parse import urlsplit

    parts = urlsplit(config.url)
    url = f"{parts.scheme}://{parts.netloc}/robots.txt"
    page = await context.new_page()
    try:
        async with limit.navigation(page, url):
            response = await asyncio.wait_for(page.goto(url), config.page_timeout_s)
        status = response.status if response is not None else 0
        if status == 200 and response is not None:
            body = (await response.body())[:ROBOTS_MAX_BYTES]
            return {"status": "found", "url": url, "text": body.decode("utf-8", "replace")}
        return {"status": "absent" if 400 <= status < 500 else "unavailable", "url": url}
    except Exception:  # a robots.txt that cannot be read must not fail the crawl
        return {"status": "unavailable", "url": url}
    finally:
        with contextlib.suppress(Exception):
            await page.close()


SITEMAP_MAX_BYTES = 2_000_000
SITEMAP_MAX_CHILDREN = 5


async def _fetch_body(context: BrowserContext, url: str, timeout_s: float, limit: OriginRateLimit) -> tuple[int, bytes]:
    """A URL's status and body, through the guarded browser (public addresses only)."""
    page = await context.new_page()
    try:
        async with limit.navigation(page, url):
            response = await asyncio.wait_for(page.goto(url), timeout_s)
        if response is None:
            return 0, b""
        return response.status, (await response.body())[:SITEMAP_MAX_BYTES] if response.status == 200 else b""
    finally:
        with contextlib.suppress(Exception):
            await page.close()


def _sitemap_locs(body: bytes) -> tuple[str, list[str]]:
    """('urlset' | 'sitemapindex' | '', the <loc> values). Documents with a DOCTYPE are refused
    (no entity tricks); anything unparsable is empty."""
    import xml.etree.ElementTree as ET

    if b"<!DOCTYPE" in body[:4096].upper() or b"<!ENTITY" in body.upper():
        return "", []
    try:
        root = ET.fromstring(body)  # noqa: S314 - no DOCTYPE/entities (checked above), size capped
    except ET.ParseError:
        return "", []
    kind = root.tag.rsplit("}", 1)[-1]
    locs = [(el.text or "").strip() for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "loc"]
    return kind, [loc for loc in locs if loc]


async def _seed_from_sitemap(
    context: BrowserContext, config: CrawlConfig, state: _State, limit: OriginRateLimit
) -> dict[str, Any]:
    """Add the site's sitemap URLs (same origin, in scope) to the frontier, up to max_pages."""
    from urllib.parse import urlsplit

    parts = urlsplit(config.url)
    candidates = [f"{parts.scheme}://{parts.netloc}/sitemap.xml"]
    robots_text = (state.robots or {}).get("text") or ""
    named = [line.split(":", 1)[1].strip() for line in robots_text.splitlines() if line.lower().startswith("sitemap:")]
    named = [u for u in named if same_origin(u, config.url)]
    if named:
        candidates = named[:SITEMAP_MAX_CHILDREN]
    urls: list[str] = []
    found = None
    url = candidates[0]  # what was looked for, named in the result whatever the outcome
    try:
        queue = list(candidates)
        fetched = 0
        while queue and fetched < SITEMAP_MAX_CHILDREN + 1:
            url = queue.pop(0)
            fetched += 1
            status, body = await _fetch_body(context, url, config.page_timeout_s, limit)
            kind, locs = _sitemap_locs(body) if status == 200 else ("", [])
            if kind == "sitemapindex":
                queue += [loc for loc in locs if same_origin(loc, config.url)][:SITEMAP_MAX_CHILDREN]
            elif kind == "urlset":
                found = found or url
                urls += locs
    except Exception:  # a sitemap that cannot be read never fails the crawl
        return {"status": "unavailable", "url": url, "seeded": 0}
    seeded = 0
    for loc in urls:
        if not is_http(loc) or not same_origin(loc, config.url) or _out_of_scope(loc, config, state):
            continue
        key = dedup_key(loc)
        if key in state.seen or len(state.order) >= config.max_pages:
            continue
        state.seen[key] = fetch_url(loc)
        state.order.append({"url": fetch_url(loc), "key": key, "depth": 1})
        seeded += 1
    return {"status": "found" if found else "absent", "url": found or candidates[0], "seeded": seeded}


async def _login(context: BrowserContext, auth: AuthConfig, timeout_ms: float, limit: OriginRateLimit) -> None:
    password = auth.password
    if password is None and auth.password_secret_arn:
        from agent_patterns.config import resolve_secret

        password = resolve_secret(auth.password_secret_arn)
    if password is None:
        raise LoginError("login failed: no password or password_secret_arn given")
    page = await context.new_page()
    try:
        async with limit.navigation(page, auth.login_url):
            await page.goto(auth.login_url, timeout=timeout_ms, wait_until="load")
        await page.fill(auth.username_selector, auth.username, timeout=timeout_ms)
        await page.fill(auth.password_selector, password, timeout=timeout_ms)
        await page.click(auth.submit_selector, timeout=timeout_ms)
        await _await_login(page, auth)
    except LoginError:
        raise
    except Exception as exc:
        # Playwright messages can quote what was typed into fields: keep only the first line,
        # and never the password.
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LoginError(f"login failed: {detail.replace(password, '***')}") from None
    finally:
        await page.close()


class LoginError(Exception):
    pass


LOGIN_FORM_GRACE_S = 3.0


async def _await_login(page: Page, auth: AuthConfig) -> None:
    """Wait for the success check; fail early when the login form is still there a few seconds
    after submitting (wrong credentials), instead of waiting out the whole timeout."""
    submitted = time.monotonic()
    deadline = submitted + auth.timeout_s
    while True:
        succeeded, form_shown = False, False
        with contextlib.suppress(Exception):  # the page may be mid-navigation: probe again
            if auth.success_selector:
                succeeded = await page.locator(auth.success_selector).count() > 0
            elif auth.success_url_contains:
                succeeded = auth.success_url_contains in page.url
            form_shown = await page.locator(auth.password_selector).count() > 0
            if not auth.success_selector and not auth.success_url_contains:
                succeeded = not form_shown
        if succeeded:
            return
        if form_shown and time.monotonic() - submitted > min(LOGIN_FORM_GRACE_S, auth.timeout_s):
            raise LoginError("login failed: the login form is still shown after submitting")
        if time.monotonic() > deadline:
            raise LoginError(f"login failed: the success check was not met within {auth.timeout_s:g} s")
        await asyncio.sleep(0.2)


async def _restore_storage(context: BrowserContext, storage: dict[str, Any] | None) -> None:
    if not storage:
        return
    if storage.get("cookies"):
        await context.add_cookies(storage["cookies"])
    for origin_state in storage.get("origins", []):
        items = {i["name"]: i["value"] for i in origin_state.get("localStorage", [])}
        if items:
            import json

            script = (
                f"if (location.origin === {json.dumps(origin_state['origin'])}) {{"
                f" const items = {json.dumps(items)};"
                " for (const [k, v] of Object.entries(items)) localStorage.setItem(k, v); }"
            )
            await context.add_init_script(script)


async def _crawl_one(page: Page, entry: dict[str, Any], config: CrawlConfig, start_url: str) -> dict[str, Any]:
    url = entry["url"]
    current = page.url
    if current != "about:blank" and current.split("#")[0] == url.split("#")[0]:
        await page.goto("about:blank")  # a hash route must load as its own document
    response = await page.goto(url, timeout=config.page_timeout_s * 1000, wait_until="load")
    if response is not None and BLOCKED_HEADER in response.headers:
        raise BlockedAddressError(response.headers[BLOCKED_HEADER])
    final_url = page.url
    record: dict[str, Any] = {
        "url": url,
        "final_url": final_url,
        "status": response.status if response is not None else None,
        "depth": entry["depth"],
        "title": "",
        "links": [],
        "forms": [],
        "markdown": None,
        "lang": None,
        "content_hash": None,
    }
    if not same_origin(final_url, start_url):
        record["redirected_off_origin"] = True
        return record
    both = await page.evaluate(PAGE_JS, {"limits": config.limits.as_js(), "html_chars": config.limits.html_chars})
    data, source = both["page"], both["source"]
    record["title"] = data["title"]
    record["links"] = list(dict.fromkeys(data["links"]))
    record["forms"] = data["forms"]
    truncated = set(data["truncated"])
    # The main content as Markdown, from the rendered DOM; converted off the event loop (the other
    # tabs go on meanwhile), and like every step of the page within the page's time.
    if source["truncated"]:
        truncated.add("html")
    try:
        text = await asyncio.to_thread(page_text_from, source, config.limits.markdown_bytes)
    except Exception as exc:  # a converter failing on odd markup costs the page its Markdown, no more
        from agent_patterns.observability import logger

        logger.warning("no markdown for a crawled page", extra={"url": url, "error": repr(exc)[:300]})
    else:
        record.update(markdown=text.markdown, lang=text.lang, content_hash=text.content_hash)
        if text.truncated:
            truncated.add("markdown")
    if truncated:  # what this page had more of than PageLimits keeps
        record["truncated"] = sorted(truncated)
    return record


def _http_credentials(config: CrawlConfig) -> Any:
    """Playwright's HTTP credentials, sent to the start URL's origin only."""
    if config.http_credentials is None:
        return None
    user, password = config.http_credentials
    parts = urlsplit(config.url)
    return {"username": user, "password": password, "origin": f"{parts.scheme}://{parts.netloc}"}


async def _replace_page(context: BrowserContext, page: Page, pages: list[Page]) -> Page:
    """A fresh tab instead of `page`, which is closed without waiting on its scripts."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(page.close(run_before_unload=False), 5)
    fresh = await context.new_page()
    pages.append(fresh)
    return fresh


async def run_crawl(config: CrawlConfig) -> CrawlResult:
    """Crawl `config.url`'s origin breadth-first; never raises for crawl problems: they are in
    `error_message` (the run failed) or in `crawl_data["skipped"]` (one URL failed)."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    from agent_patterns.crawl.browser import chromium_executable

    started = time.monotonic()
    policy = EgressPolicy(config.allowed_private_hosts)
    state = _State(**config.resume_state) if config.resume_state else _State.start(config.url)
    state.invocations += 1
    limit = OriginRateLimit(config.url, config.max_requests_per_second, resume_at=state.rate_next_at)
    _apply_crawl_delay(limit, config, state)
    try:
        await policy.check_url(config.url)
    except BlockedAddressError as exc:
        return _result(state, config, limit, error=f"start URL refused: {exc}")

    warming = asyncio.create_task(asyncio.to_thread(warm_up))  # meanwhile Chromium starts
    user_data_dir = Path(tempfile.gettempdir()) / f"pw-{uuid.uuid4().hex}"
    stop_reason: str | None = None
    error: str | None = None
    page_hosts: set[str] = set()  # every host a page of the site asked for
    try:
        async with EgressProxy(policy) as proxy, async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                str(user_data_dir),
                executable_path=chromium_executable(),
                headless=True,
                args=launch_args(proxy.url),
                service_workers="block",
                accept_downloads=False,
                http_credentials=_http_credentials(config),
                # The crawl closes its browser itself (below, also when cancelled): Ctrl-C to the
                # process group must not close it under a running crawl and fail the run.
                handle_sigint=False,
                handle_sigterm=False,
                handle_sighup=False,
            )
            try:
                await context.route("**/*", _guard(config, state, page_hosts, limit))
                await _restore_storage(context, state.storage)
                if config.auth_config is not None and state.storage is None:
                    await _login(context, config.auth_config, config.page_timeout_s * 1000, limit)
                    state.storage = await context.storage_state()  # type: ignore[assignment]
                if config.respect_robots and state.robots is None:
                    state.robots = await _fetch_robots(context, config, limit)
                    _apply_crawl_delay(limit, config, state)
                if config.use_sitemap and state.sitemap is None:
                    state.sitemap = await _seed_from_sitemap(context, config, state, limit)
                stop_reason = await _crawl_frontier(context, config, state, started, limit)
                if stop_reason == "continue" and config.auth_config is not None:
                    state.storage = await context.storage_state()  # type: ignore[assignment]
            except LoginError as exc:
                error = str(exc)
            finally:
                await context.close()
            for b in site_blocked(proxy.blocked, page_hosts):
                if len(state.blocked) < MAX_SKIPPED and all(x["url"] != b.url for x in state.blocked):
                    state.blocked.append({"url": b.url, "reason": b.reason})
    except PlaywrightError as exc:
        error = f"browser failed: {str(exc).splitlines()[0]}"
    finally:
        shutil.rmtree(user_data_dir, ignore_errors=True)
        state.elapsed_s += time.monotonic() - started
        state.rate_next_at = limit.resume_at()
        with contextlib.suppress(Exception):  # an import error shows on the pages that needed it
            await warming
    if error is not None:
        return _result(state, config, limit, error=error)
    if stop_reason == "continue":
        return _result(state, config, limit, continuation=True)
    return _result(state, config, limit, stopped=stop_reason)


def _apply_crawl_delay(limit: OriginRateLimit, config: CrawlConfig, state: _State) -> None:
    """robots.txt's Crawl-delay for our token, when robots.txt is respected, slows the crawl."""
    text = (state.robots or {}).get("text")
    if config.respect_robots and text:
        limit.set_crawl_delay(crawl_delay(text, ROBOTS_AGENT))


def site_blocked(blocked: list[BlockedRequest], page_hosts: set[str]) -> list[BlockedRequest]:
    """What the proxy refused on the site's behalf: requests to hosts the pages asked for. The
    rest is the browser's own traffic (updates, sign-in probes), never counted as the site's."""
    return [b for b in blocked if b.host is None or b.host in page_hosts]


def _guard(config: CrawlConfig, state: _State, page_hosts: set[str], limit: OriginRateLimit) -> Any:
    blocked_types = set(config.block_resources)

    async def guard(route: Route) -> None:
        request = route.request
        host = urlsplit(request.url).hostname
        if host:
            page_hosts.add(host.lower())
        if not is_http(request.url):
            if len(state.blocked) < MAX_SKIPPED:
                state.blocked.append({"url": request.url[:500], "reason": "only http and https are allowed"})
            await route.abort("blockedbyclient")
            return
        if request.resource_type in blocked_types:
            await route.abort("blockedbyclient")
            return
        await limit.admit(request)  # a document request to the crawled origin waits for its slot
        await route.continue_()

    return guard


async def _crawl_frontier(
    context: BrowserContext, config: CrawlConfig, state: _State, started: float, limit: OriginRateLimit
) -> str | None:
    """Crawl until done; returns None (finished), "continue" (out of invocation time) or
    "time limit" (the run's total time is used up). Each page's request slot (politeness.py) is
    taken when the page is handed out, and judged against the time limits as of that slot."""
    from playwright.async_api import Error as PlaywrightError

    pending = [e for e in state.order if not state.finished(e["key"])]
    cursor = 0  # next entry of `pending` to start
    in_flight = 0
    progressed = 0  # pages started in this invocation
    stop: list[str] = []
    changed = asyncio.Condition()
    pages: list[Page] = []

    def over_time(now: float) -> str | None:
        if config.stop_at is not None and now >= config.stop_at and progressed:
            return "continue"  # every invocation crawls at least one page, so continuations progress
        if state.elapsed_s + (now - started) >= config.total_time_limit_s:
            return "time limit"
        return None

    async def next_entry() -> tuple[dict[str, Any], float] | None:
        nonlocal cursor, in_flight, progressed
        async with changed:
            while True:
                if stop:
                    return None
                if cursor < len(pending):
                    slot = limit.next_slot()  # when this page's request may go out
                    reason = over_time(slot)
                    if reason:
                        stop.append(reason)
                        changed.notify_all()
                        return None
                    entry = pending[cursor]
                    cursor += 1
                    in_flight += 1
                    progressed += 1
                    return entry, limit.reserve()
                if in_flight == 0:  # nothing running could add more: the crawl is complete
                    changed.notify_all()
                    return None
                await changed.wait()

    async def finish(entry: dict[str, Any], record: dict[str, Any] | None, failure: str | None) -> None:
        nonlocal in_flight
        async with changed:
            if record is not None:
                state.done[entry["key"]] = record
            else:
                state.failed[entry["key"]] = {"url": entry["url"], "reason": failure or "error"}
            in_flight -= 1
            before = len(state.order)
            _expand(state, config, config.url)
            pending.extend(state.order[before:])
            changed.notify_all()

    report_lock = asyncio.Lock()

    async def worker() -> None:
        # Own tabs only: the context's first tab stays open until the context closes, because
        # Chromium ends the session (dropping session cookies) when its last tab closes.
        page = await context.new_page()
        pages.append(page)
        while (handed := await next_entry()) is not None:
            entry, slot = handed
            await limit.take(slot)  # politeness: before the page's own time starts
            record, failure = None, None
            # Every step of a page (navigation, waiting, extraction) runs inside the page's time,
            # and never past the run's total limit: a script that never yields cannot hold it.
            left = config.total_time_limit_s - (state.elapsed_s + time.monotonic() - started)
            budget = max(0.1, min(config.page_timeout_s + 1, left))
            try:
                with limit.prepaid(page):
                    record = await asyncio.wait_for(_crawl_one(page, entry, config, config.url), budget)
            except TimeoutError:
                failure = "timeout" if budget < left else "limit reached"
                page = await _replace_page(context, page, pages)  # its renderer may be stuck in a loop
            except BlockedAddressError as exc:
                failure = f"blocked address: {exc}"
            except PlaywrightError as exc:
                first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                failure = "timeout" if "Timeout" in first_line else f"error: {first_line}"
                if "ERR_TUNNEL_CONNECTION_FAILED" in first_line:
                    failure = "blocked address"
            await finish(entry, record, failure)
            if config.on_page is not None:
                # One report at a time, counted inside the lock: progress never goes backwards.
                async with report_lock:
                    await config.on_page(entry["url"], len(state.done), record, failure)

    try:
        await asyncio.gather(*(worker() for _ in range(config.concurrency)))
    finally:
        for page in pages:
            with contextlib.suppress(Exception):
                await page.close()
    if "time limit" in stop:
        for entry in pending[cursor:]:
            _skip(state, entry["url"], "limit reached (total time)")
        return "time limit"
    if stop:
        return "continue"
    return None


def _result(
    state: _State,
    config: CrawlConfig,
    limit: OriginRateLimit,
    *,
    error: str | None = None,
    continuation: bool = False,
    stopped: str | None = None,
) -> CrawlResult:
    pages = [state.done[e["key"]] for e in state.order if e["key"] in state.done]  # BFS order
    skipped = list(state.skipped) + [{"url": f["url"], "reason": f["reason"]} for f in state.failed.values()]
    links = {dedup_key(link) for p in pages for link in p["links"] if is_http(link)}
    crawl_data: dict[str, Any] = {
        "start_url": config.url,
        "pages": pages,
        "skipped": skipped,
        "blocked": list(state.blocked),
        "invocations": state.invocations,
        "elapsed_s": round(state.elapsed_s, 2),
    }
    if stopped:
        crawl_data["stopped"] = stopped
    robots = state.robots or {}
    crawl_data["robots"] = {"respected": config.respect_robots, **{k: v for k, v in robots.items() if k != "text"}}
    if state.sitemap is not None:
        crawl_data["sitemap"] = state.sitemap
    crawl_data["rate_limit"] = limit.describe()
    truncated = [{"url": p["url"], "what": p["truncated"]} for p in pages if p.get("truncated")]
    if truncated:
        crawl_data["truncated"] = truncated
    return CrawlResult(
        pages_crawled=len(pages),
        forms_found=sum(len(p["forms"]) for p in pages),
        links_found=len(links),
        crawl_data=crawl_data,
        error_message=error,
        continuation=state.to_json() if continuation else None,
    )
