"""The pages in a real browser: Debian's headless Chromium, driven by Playwright, against a
real ``imgclass serve``. Each test also checks that the page asked nothing of any other
origin and raised no script error (a CSP violation included).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.conftest import CAT_CLASSES, ESPRESSO
from tests.support.system import require_binary

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow

HOSTILE_NAME = '<img src=x onerror="window.__pwned=1">.jpg'


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_binary("chromium", "chromium")


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    from tests.support.server import serve

    data_dir = tmp_path_factory.mktemp("browser") / "data"
    with serve(data_dir, model_dir) as base:
        yield base, data_dir


@pytest.fixture(scope="module")
def browser(chromium):
    from tests.support.browser import launch

    with playwright_api.sync_playwright() as p:
        browser = launch(p, chromium)
        yield browser
        browser.close()


class Watch:
    """What a page did: every URL it requested, and every script error or CSP report."""

    def __init__(self, page, base: str):
        self.base = base
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("console", self._console)

    def _console(self, message):
        text = message.text
        if "Content Security Policy" in text or (
            message.type == "error" and "Failed to load resource" not in text
        ):
            self.errors.append(f"console {message.type}: {text}")

    def foreign(self) -> list[str]:
        # blob: URLs are the page's own object URLs (the upload preview), minted by its origin.
        local = (self.base + "/", f"blob:{self.base}/")
        return [u for u in self.requests if not u.startswith(local)]


@pytest.fixture
def page(browser, server):
    base, _ = server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    watch = Watch(page, base)
    page.watch = watch
    yield page
    context.close()
    assert watch.requests, "the page made no request at all"
    assert watch.foreign() == [], "the page reached beyond the server"
    assert watch.errors == []


def file_payload(name: str, data: bytes, mime: str) -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def warehouse(data_dir: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(data_dir / "imgclass.db") as conn:
        return conn.execute(sql, params).fetchall()


# ---- the upload page -----------------------------------------------------------


def predictions(page) -> list[dict]:
    page.wait_for_selector("#predictions li")
    return page.eval_on_selector_all(
        "#predictions li",
        """items => items.map(li => ({
            classId: Number(li.dataset.classId),
            text: li.innerText,
            width: li.querySelector('.fill').getBoundingClientRect().width,
        }))""",
    )


def test_upload_a_photo_and_see_a_cat_among_the_bars(page, server, cat_jpeg):
    base, data_dir = server
    page.goto(base + "/")
    page.set_input_files("#file", files=[file_payload("chelsea.jpg", cat_jpeg, "image/jpeg")])
    bars = predictions(page)
    assert len(bars) == 5
    assert bars[0]["classId"] in CAT_CLASSES
    assert "cat" in bars[0]["text"].lower()
    page.wait_for_function(
        "document.querySelector('#predictions li .fill').getBoundingClientRect().width > 50"
    )
    widths = page.eval_on_selector_all(
        "#predictions .fill", "els => els.map(e => e.getBoundingClientRect().width)"
    )
    assert widths == sorted(widths, reverse=True)  # scores as bars, longest first
    assert page.eval_on_selector("#preview", "img => img.naturalWidth") == 451  # chelsea
    assert page.is_visible("#preview")
    request_id = page.inner_text("#meta-request")
    rows = warehouse(
        data_dir,
        "SELECT c.class_id, i.image_filename FROM api_event_fact f "
        "JOIN class_dim c USING (class_key) JOIN image_dim i USING (image_key) "
        "WHERE f.request_id = ?",
        request_id,
    )
    assert rows == [(bars[0]["classId"], "chelsea.jpg")]


def test_drop_a_photo_on_the_page(page, server, coffee_jpeg):
    base, _ = server
    page.goto(base + "/")
    # A real drag from the desktop cannot be scripted; a drop event carrying the file can.
    transfer = page.evaluate_handle(
        """bytes => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], 'coffee.jpg', {type: 'image/jpeg'}));
            return dt;
        }""",
        list(coffee_jpeg),
    )
    page.dispatch_event("#dropzone", "dragover", {"dataTransfer": transfer})
    assert "dragging" in page.get_attribute("#dropzone", "class")
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    bars = predictions(page)
    assert bars[0]["classId"] == ESPRESSO
    assert "espresso" in bars[0]["text"].lower()
    assert "coffee.jpg" in page.inner_text("#file-name")


def test_a_text_file_shows_the_servers_415_message(page, server):
    base, _ = server
    page.goto(base + "/")
    page.set_input_files("#file", files=[file_payload("notes.txt", b"just text\n", "text/plain")])
    page.wait_for_selector("#error:not([hidden])")
    assert page.get_attribute("#error", "data-code") == "unsupported_media_type"
    message = page.inner_text("#error")
    assert "not a supported image" in message and "JPEG" in message
    assert page.inner_text("#status") == "Error 415"
    assert page.query_selector_all("#predictions li") == []


def test_hostile_file_name_is_shown_as_text(page, server, cat_jpeg):
    base, _ = server
    page.goto(base + "/")
    page.set_input_files("#file", files=[file_payload(HOSTILE_NAME, cat_jpeg, "image/jpeg")])
    predictions(page)
    assert HOSTILE_NAME in page.inner_text("#file-name")
    assert page.query_selector_all("#file-name img") == []
    assert page.evaluate("window.__pwned") is None
