"""Headless Chromium for tests and scripts: Debian's browser, driven by Playwright.

Playwright's own browser download is never used (``playwright install`` is not run):
``launch`` points Playwright at the system's ``chromium`` and switches off everything
that would make the browser reach out to the network by itself.
"""

from __future__ import annotations

from playwright.sync_api import Browser, Playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright: Playwright, executable: str) -> Browser:
    """Start ``executable`` (the path of Debian's chromium) headless."""
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
