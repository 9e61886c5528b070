"""``/api/docs`` in a real browser: Swagger UI, served by the app, renders every operation of
the spec under the app's Content-Security-Policy and asks nothing of any other origin.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from playwright import sync_api as playwright_api

from tests.e2e.test_browser import Watch
from tests.support.system import require_binary

pytestmark = pytest.mark.slow


def test_swagger_ui_renders_every_operation(tmp_path, model_dir):
    from tests.support.browser import launch
    from tests.support.server import serve

    chromium = require_binary("chromium", "chromium")
    with serve(tmp_path / "data", model_dir) as base, playwright_api.sync_playwright() as p:
        with urllib.request.urlopen(base + "/api/v1/openapi.json") as resp:
            spec = json.load(resp)
        operations = sum(len(item) for item in spec["paths"].values())
        browser = launch(p, chromium)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            watch = Watch(page, base)
            page.goto(base + "/api/docs")
            page.wait_for_selector(".opblock-summary-path")
            shown = page.locator(".opblock").count()
            title = page.locator(".info .title").inner_text()
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            # Opening an operation shows its documented responses.
            page.locator("#operations-predict-post_api_v1_predict").click()
            page.wait_for_selector("#operations-predict-post_api_v1_predict .responses-table")
            statuses = page.locator(
                "#operations-predict-post_api_v1_predict .response-col_status"
            ).all_inner_texts()
        finally:
            browser.close()
    assert shown == operations
    assert title.startswith("imgclass")
    assert any("/api/v1/predict" in p for p in paths)
    assert {"200", "415", "422"} <= {s.strip() for s in statuses}
    assert watch.errors == []
    assert watch.foreign() == []
