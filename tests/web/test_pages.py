"""The pages as HTML: served, same-origin only, no inline code, and a clear message without charts.

What the pages do in a browser is tested in tests/e2e/test_browser.py.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from imgclass.web import pages


class Inventory(HTMLParser):
    """Every tag with its attributes, and the text inside <script> and <style>."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_code: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._in = tag

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in and data.strip():
            self.inline_code.append(f"<{self._in}>{data.strip()[:60]}")

    def urls(self) -> list[str]:
        return [
            value
            for _, attrs in self.tags
            for name, value in attrs.items()
            if name in ("src", "href", "action") and value
        ]


def inventory(html: str) -> Inventory:
    parser = Inventory()
    parser.feed(html)
    return parser


@pytest.mark.parametrize("path", ["/", "/dashboard"])
def test_pages_run_no_inline_code_and_load_only_from_the_server(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = inventory(response.get_data(as_text=True))
    assert page.inline_code == []
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts and all(attrs.get("src", "").startswith("/static/") for attrs in scripts)
    assert [(tag, attrs) for tag, attrs in page.tags if "style" in attrs] == []
    handlers = [(tag, n) for tag, attrs in page.tags for n in attrs if n.startswith("on")]
    assert handlers == []
    for url in page.urls():
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        if url.startswith("/static/"):
            assert client.get(url).status_code == 200, url

    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_scripts_are_served_as_javascript_modules(client):
    for name in ("upload.js", "dashboard.js", "api.js", "dom.js", "charts.js"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200
        # Browsers refuse a module script with any other MIME type.
        assert response.mimetype == "text/javascript", name
    assert client.get("/static/app.css").mimetype == "text/css"


def test_no_script_writes_html(client):
    """Values from the warehouse are attacker-controlled: only text nodes, never markup."""
    for name in ("upload.js", "dashboard.js", "api.js", "dom.js", "charts.js"):
        source = client.get(f"/static/{name}").get_data(as_text=True)
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, f"{name} uses {sink}"


def test_upload_page_tells_the_configured_size_limit(tmp_path, model_dir):
    from imgclass.app import create_app, services
    from imgclass.config import Settings

    app = create_app(
        Settings(data_dir=tmp_path / "d", model_dir=model_dir, max_upload_bytes=5 * 2**20)
    )
    try:
        html = app.test_client().get("/").get_data(as_text=True)
    finally:
        services(app).engine.dispose()
    assert 'data-max-bytes="5242880"' in html
    assert "up to 5 MB" in html


def test_dashboard_loads_the_vendor_chart_library_when_installed(client):
    if not pages.chart_js_available():
        pytest.fail("static/vendor/chart.umd.min.js is missing: `make install` copies it")
    page = inventory(client.get("/dashboard").get_data(as_text=True))
    assert "/static/vendor/chart.umd.min.js" in page.urls()
    banner = next(a for t, a in page.tags if a.get("id") == "charts-missing")
    assert "hidden" in banner
    library = client.get("/static/vendor/chart.umd.min.js")
    assert library.status_code == 200 and b"Chart.js v4" in library.data[:200]


def test_dashboard_without_the_vendor_file_still_serves_and_says_why(client, monkeypatch):
    monkeypatch.setattr(pages, "CHART_JS", "vendor/not-installed.js")
    response = client.get("/dashboard")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    page = inventory(html)
    assert not any("vendor" in url for url in page.urls())
    banner = next(a for t, a in page.tags if a.get("id") == "charts-missing")
    assert "hidden" not in banner
    assert "Charts are unavailable" in html and "make install" in html
    assert client.get("/").status_code == 200  # the upload page does not need it


def test_unknown_static_file_is_a_404(client):
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/static/../pages.py").status_code == 404
