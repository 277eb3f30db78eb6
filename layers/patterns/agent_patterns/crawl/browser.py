"""Finding a Chromium for Playwright: configuration, Playwright's own install, or the system's.

Playwright's browser download is not available everywhere (CI here, air-gapped builds), so a
system Chromium is a first-class fallback rather than an error.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from agent_patterns.crawl.settings import crawl_settings

SYSTEM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Flags for headless Chromium on servers and in Lambda: no sandbox (Lambda runs as root without
# user namespaces), no GPU, no /dev/shm, and none of the background traffic a desktop browser makes.
BASE_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--mute-audio",
    # The browser's own traffic (safe browsing, pings, crash and domain-reliability reports,
    # field trials): none of it is the site's, and the egress proxy would only refuse it.
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--disable-field-trial-config",
    "--no-pings",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
)


def chromium_executable() -> str | None:
    """Path of the browser to launch; None means Playwright's bundled Chromium (it is installed)."""
    configured = crawl_settings().chromium_path
    if configured:
        if not Path(configured).is_file():
            from agent_patterns.errors import ConfigurationError

            raise ConfigurationError(f"CHROMIUM_PATH={configured} does not exist")
        return configured
    if _playwright_chromium_installed():
        return None
    for name in SYSTEM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    from agent_patterns.errors import ConfigurationError

    raise ConfigurationError(
        "no Chromium found: set CHROMIUM_PATH, run 'playwright install chromium', or install a system chromium"
    )


def _playwright_chromium_installed() -> bool:
    """Whether Playwright's own browser for headless runs is installed: since Playwright 1.49 a
    headless launch starts its `chromium-headless-shell` build (`playwright install --only-shell
    chromium` installs only that), never the full `chromium-*` one, on x64 and arm64 alike."""
    base = crawl_settings().playwright_browsers_path or str(Path.home() / ".cache" / "ms-playwright")
    root = Path(base)
    return root.is_dir() and any(
        exe.is_file() for exe in root.glob("chromium_headless_shell-*/chrome-headless-shell-*/chrome-headless-shell")
    )
