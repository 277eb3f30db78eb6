"""run_crawl against sites the tests serve locally, in real Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent_patterns.crawl import AuthConfig, CrawlConfig, CrawlResult, run_crawl
from agent_patterns.crawl.netguard import BlockedAddressError, EgressPolicy, is_public
from agent_patterns.crawl.urls import dedup_key, fetch_url
from tests.conftest import LiveServer
from tests.crawl_site import build_site, counting_site


@dataclass
class Sites:
    base: str
    hits: Counter[str]
    other_hits: Counter[str]
    private_hits: Counter[str]
    allowed: tuple[str, ...]

    def config(self, **kw: Any) -> CrawlConfig:
        defaults: dict[str, Any] = {
            "url": self.base + "/",
            "allowed_private_hosts": self.allowed,
            "page_timeout_s": 1.5,
            "concurrency": 4,
        }
        defaults.update(kw)
        return CrawlConfig(**defaults)


@pytest.fixture(scope="module")
def sites() -> Iterator[Sites]:
    other_app, other_hits = counting_site()
    private_app, private_hits = counting_site()
    with LiveServer(other_app) as other, LiveServer(private_app) as private:
        site, hits = build_site(other_origin=other.url, private_origin=private.url)
        with LiveServer(site) as main:
            yield Sites(main.url, hits, other_hits, private_hits, (f"127.0.0.1:{main.port}",))


def urls(result: CrawlResult) -> set[str]:
    return {p["url"] for p in result.crawl_data["pages"]}


def reasons(result: CrawlResult) -> dict[str, str]:
    return {s["url"]: s["reason"] for s in result.crawl_data["skipped"]}


@pytest.fixture(scope="module")
def full(sites: Sites) -> CrawlResult:
    """One uninterrupted crawl of the whole site, shared by the tests that inspect it."""
    import asyncio

    return asyncio.run(run_crawl(sites.config()))


async def test_crawls_the_origin_breadth_first_with_cycles_and_duplicates_removed(
    sites: Sites, full: CrawlResult
) -> None:
    b = sites.base
    assert full.succeeded, full.error_message
    expected = {
        b + "/",
        b + "/about",
        b + "/products",
        b + "/products?b=2&a=1",
        b + "/app#/dashboard",
        b + "/app#!/settings",
        b + "/missing",
        b + "/contact",
        b + "/products/1",
        b + "/products/2",
        b + "/app#/reports",
    }
    assert expected <= urls(full)
    assert len(urls(full)) == len({dedup_key(u) for u in urls(full)})  # nothing twice
    depth = {p["url"]: p["depth"] for p in full.crawl_data["pages"]}
    assert depth[b + "/"] == 0 and depth[b + "/about"] == 1 and depth[b + "/contact"] == 2
    assert sites.hits["/about"] == 1  # /about#team is the same page
    why = reasons(full)
    assert why[b + "/about#team"] == "duplicate" and why[b + "/products?a=1&b=2"] == "duplicate"
    assert not any(u.startswith(("mailto:", "javascript:")) for u in urls(full))
    missing = next(p for p in full.crawl_data["pages"] if p["url"] == b + "/missing")
    assert missing["status"] == 404


async def test_hash_routes_are_pages_and_plain_fragments_are_not(sites: Sites, full: CrawlResult) -> None:
    b = sites.base
    by_url = {p["url"]: p for p in full.crawl_data["pages"]}
    assert by_url[b + "/app#/dashboard"]["links"] == [b + "/app#/reports"]
    settings_fields = [f["name"] for form in by_url[b + "/app#!/settings"]["forms"] for f in form["fields"]]
    assert "display_name" in settings_fields
    assert fetch_url(b + "/about#team") == b + "/about" and fetch_url(b + "/app#/x") == b + "/app#/x"


async def test_forms_inside_and_outside_form_elements(sites: Sites, full: CrawlResult) -> None:
    by_url = {p["url"]: p for p in full.crawl_data["pages"]}
    (contact,) = by_url[sites.base + "/contact"]["forms"]
    assert contact["action"] == sites.base + "/contact" and contact["method"] == "post" and not contact["standalone"]
    fields = {f["name"]: f for f in contact["fields"]}
    assert fields["name"]["required"] and fields["message"]["tag"] == "textarea" and fields["email"]["type"] == "email"
    assert fields["csrf"]["type"] == "hidden" and not fields["email"]["required"]
    spa = by_url[sites.base + "/app#/dashboard"]["forms"]
    assert len(spa) == 1 and spa[0]["standalone"] and spa[0]["action"] is None
    assert {f["name"] for f in spa[0]["fields"]} == {"q", "sort"}
    assert full.forms_found == sum(len(p["forms"]) for p in full.crawl_data["pages"])
    assert full.pages_crawled == len(full.crawl_data["pages"])


async def test_cross_origin_links_are_reported_never_fetched(sites: Sites, full: CrawlResult) -> None:
    external = [s for s in full.crawl_data["skipped"] if s["url"].endswith("/external")]
    assert external and external[0]["reason"] == "cross-origin"
    assert sites.other_hits.total() == 0


async def test_a_redirect_to_a_private_address_is_blocked_and_reported(sites: Sites, full: CrawlResult) -> None:
    assert reasons(full)[sites.base + "/redirect-private"].startswith("blocked address")
    assert sites.private_hits.total() == 0
    assert any("/secret" in b["url"] or "127.0.0.1" in b["url"] for b in full.crawl_data["blocked"])


async def test_script_requests_to_the_metadata_address_are_blocked_and_reported(full: CrawlResult) -> None:
    blocked = [b for b in full.crawl_data["blocked"] if "169.254.169.254" in b["url"]]
    assert blocked and "non-public" in blocked[0]["reason"]


async def test_slow_pages_hit_the_per_page_timeout(sites: Sites, full: CrawlResult) -> None:
    assert reasons(full)[sites.base + "/slow"] == "timeout"


async def test_images_are_not_downloaded(sites: Sites, full: CrawlResult) -> None:
    assert sites.base + "/" in urls(full) and sites.hits["/"] >= 1  # the page with the <img> was loaded
    assert sites.hits["/image.png"] == 0


async def test_max_pages_limits_the_crawl_and_says_why(sites: Sites) -> None:
    result = await run_crawl(sites.config(max_pages=3))
    assert result.pages_crawled == 3 and len(urls(result)) == 3
    assert "limit reached" in reasons(result).values()
    with pytest.raises(ValueError, match="max_pages"):
        sites.config(max_pages=101)


async def test_the_total_time_limit_ends_the_crawl(sites: Sites) -> None:
    result = await run_crawl(sites.config(total_time_limit_s=0.01))
    assert result.crawl_data["stopped"] == "time limit"
    assert result.pages_crawled <= 1 and result.error_message is None


async def test_a_continued_crawl_ends_with_the_uninterrupted_page_set(sites: Sites, full: CrawlResult) -> None:
    state = None
    invocations = 0
    while True:
        invocations += 1
        # A tiny invocation budget: each invocation gets a few pages before it must stop. The first
        # has none left at all (it crawls its one guaranteed page), so the crawl surely continues
        # however fast the machine hands out every page.
        budget = 0.0 if state is None else 1.2
        result = await run_crawl(sites.config(stop_at=time.monotonic() + budget, resume_state=state))
        if result.continuation is None:
            break
        assert not result.succeeded
        state = result.continuation
        assert invocations < 60
    assert invocations > 1  # really continued
    assert result.crawl_data["invocations"] == invocations
    assert urls(result) == urls(full)
    assert {(p["url"], p["depth"]) for p in result.crawl_data["pages"]} == {
        (p["url"], p["depth"]) for p in full.crawl_data["pages"]
    }


def auth(**kw: Any) -> AuthConfig:
    base: dict[str, Any] = {
        "login_url": "",
        "username": "ada",
        "password": "correct horse",
        "success_selector": "#welcome",
    }
    base.update(kw)
    return AuthConfig(**base)


async def test_login_runs_first_and_the_session_lasts_the_whole_run(sites: Sites) -> None:
    config = sites.config(url=sites.base + "/account", auth_config=auth(login_url=sites.base + "/login"))
    result = await run_crawl(config)
    assert result.succeeded, result.error_message
    assert {sites.base + "/account", sites.base + "/account/settings"} <= urls(result)
    assert all(p["final_url"].startswith(sites.base + "/account") for p in result.crawl_data["pages"])
    assert "correct horse" not in repr(result.crawl_data)


async def test_the_session_survives_continuations(sites: Sites) -> None:
    config = sites.config(url=sites.base + "/account", auth_config=auth(login_url=sites.base + "/login"))
    state, invocations = None, 0
    while True:
        invocations += 1
        # No time left in any invocation: each crawls its one guaranteed page and continues.
        result = await run_crawl(replace(config, stop_at=time.monotonic(), resume_state=state))
        if result.continuation is None:
            break
        state = result.continuation
    assert invocations > 1
    by_url = {p["url"]: p for p in result.crawl_data["pages"]}
    assert by_url[sites.base + "/account/settings"]["final_url"] == sites.base + "/account/settings"


async def test_a_failed_login_ends_the_run_with_a_clear_message(sites: Sites) -> None:
    config = sites.config(
        auth_config=auth(login_url=sites.base + "/login", password="wrong horse battery", timeout_s=2)
    )
    result = await run_crawl(config)
    assert result.error_message is not None and result.error_message.startswith("login failed")
    assert "wrong horse battery" not in result.error_message
    assert result.pages_crawled == 0


async def test_a_private_start_url_is_refused_without_a_browser(sites: Sites) -> None:
    result = await run_crawl(CrawlConfig(url=sites.base + "/"))  # no allow-list
    assert result.error_message is not None and "non-public" in result.error_message
    result = await run_crawl(CrawlConfig(url="file:///etc/passwd"))
    assert result.error_message is not None and "scheme" in result.error_message


def processes_mentioning(folder: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if str(folder) in " ".join(proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
    return found


async def test_the_browser_and_its_profile_are_gone_afterwards(
    sites: Sites, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    profiles: set[str] = set()
    browsers: set[int] = set()

    async def watch() -> None:  # what the crawl had while it ran: the check afterwards is not vacuous
        while True:
            profiles.update(p.name for p in tmp_path.glob("pw-*"))
            browsers.update(processes_mentioning(tmp_path))
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    try:
        result = await run_crawl(sites.config(max_pages=2))
    finally:
        watcher.cancel()
    assert result.pages_crawled == 2, result.error_message
    assert profiles and browsers  # Chromium ran with its profile in this folder
    assert not list(tmp_path.glob("pw-*"))
    assert processes_mentioning(tmp_path) == []


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("127.8.9.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00:ec2::254", False),
        ("ff02::1", False),
        ("::", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::a9fe:a9fe", False),
        ("64:ff9b::808:808", True),
        ("2002:a9fe:a9fe::1", False),
        ("::127.0.0.1", False),
    ],
)
def test_address_classification(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


async def test_names_are_checked_by_what_they_resolve_to() -> None:
    with pytest.raises(BlockedAddressError, match="non-public"):
        await EgressPolicy().resolve("localhost", 80)
    assert await EgressPolicy(("localhost:8080",)).resolve("localhost", 8080)
    with pytest.raises(BlockedAddressError):
        await EgressPolicy(("localhost:8080",)).resolve("localhost", 8081)  # the port is part of the grant
    assert await EgressPolicy(("127.0.0.1",)).resolve("127.0.0.1", 1234)
    with pytest.raises(BlockedAddressError, match="scheme"):
        await EgressPolicy().check_url("ftp://example.com/")


def test_the_browser_is_playwrights_headless_shell_when_installed_else_the_systems(
    settings_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A headless launch runs Playwright's chromium-headless-shell build: an install of only the
    shell (`playwright install --only-shell`, on arm64 too) is used; only the full build is not."""
    import shutil

    from agent_patterns.config import reset_settings
    from agent_patterns.crawl.browser import SYSTEM_CANDIDATES, chromium_executable

    settings_env.delenv("CHROMIUM_PATH", raising=False)
    settings_env.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path))
    full = tmp_path / "chromium-1200" / "chrome-linux64" / "chrome"
    full.parent.mkdir(parents=True)
    full.write_text("")
    reset_settings()
    system = chromium_executable()  # the full build alone is not what a headless launch starts
    assert system is not None and system in {shutil.which(name) for name in SYSTEM_CANDIDATES}
    shell = tmp_path / "chromium_headless_shell-1200" / "chrome-headless-shell-linux-arm64" / "chrome-headless-shell"
    shell.parent.mkdir(parents=True)
    shell.write_text("")
    reset_settings()
    assert chromium_executable() is None  # Playwright finds its own
