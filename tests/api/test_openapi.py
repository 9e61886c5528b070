"""The OpenAPI spec: every route in it and nothing else, valid OpenAPI 3, and its docs page.

The answers' conformance to the spec is checked by the fuzzing run (test_fuzz_api.py).
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from openapi_spec_validator import validate

from imgclass.api import openapi
from imgclass.api.openapi import UNDOCUMENTED
from imgclass.web.pages import STATIC

IMPLICIT_METHODS = {"HEAD", "OPTIONS"}


def routes(app) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every URL rule the app answers, bar static files and docs."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED:
            continue
        path = openapi.FlaskPlugin.flaskpath2openapi(rule.rule)
        found |= {(path, method.lower()) for method in rule.methods - IMPLICIT_METHODS}
    return found


def documented(spec: dict) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return {
        (path, method)
        for path, item in spec["paths"].items()
        for method in item
        if method in methods
    }


@pytest.fixture
def spec(client) -> dict:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def test_the_spec_documents_exactly_the_apps_routes(app, spec):
    assert documented(spec) == routes(app)
    # The pages and the API both: the comparison is not vacuous.
    assert ("/api/v1/predict", "post") in documented(spec)
    assert ("/api/v1/admin/backups", "get") in documented(spec)
    assert ("/api/v1/admin/backups", "post") in documented(spec)
    assert len(documented(spec)) >= 17


def test_the_spec_is_valid_openapi_3(spec):
    assert spec["openapi"].startswith("3.")
    validate(spec)  # raises on any violation of the OpenAPI 3.1 schema, and on broken $refs


def test_every_operation_documents_success_and_errors(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            assert any(s.startswith("2") for s in statuses), (path, method)
            assert "500" in statuses, (path, method)
            if path not in ("/healthz", "/readyz", "/metrics"):
                assert "429" in statuses, (path, method)  # the rate limits apply there


def test_admin_operations_require_a_key_and_say_so(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            admin = path.startswith(("/api/v1/analytics/", "/api/v1/admin/")) or path == (
                "/api/v1/drift"
            )
            if admin:
                assert operation["security"] == [{"apiKey": []}], (path, method)
                assert {"401", "403"} <= set(operation["responses"]), (path, method)


def test_analytics_filters_come_from_the_cube(spec):
    from imgclass.warehouse.cube_params import FILTER_PARAMS, TIME_PARAMS

    params = spec["paths"]["/api/v1/analytics/cube"]["get"]["parameters"]
    names = {p.get("name") or p["$ref"].rsplit("/", 1)[-1] for p in params}
    assert {"group_by", "measures", "order", "limit", "format"} <= names
    assert set(FILTER_PARAMS) | set(TIME_PARAMS) <= names
    group_by = spec["components"]["parameters"]["group_by"]
    assert group_by["style"] == "form" and group_by["explode"] is False


def test_response_schemas_come_from_the_code(spec):
    schemas = spec["components"]["schemas"]
    prediction = schemas["Prediction"]
    assert prediction["required"] == ["class_id", "label", "score"]
    score = prediction["properties"]["score"]
    assert (score["type"], score["minimum"], score["maximum"]) == ("number", 0, 1)
    # The backup manifest is the pydantic model the backups are validated with.
    assert schemas["BackupManifest"]["properties"]["name"]["pattern"].startswith("^imgclass-")


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag in ("script", "style")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline.append(data.strip()[:60])


def test_docs_page_serves_swagger_ui_from_the_app_under_the_csp(client):
    response = client.get("/api/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    page = Tags()
    page.feed(response.get_data(as_text=True))
    assert page.inline == []
    assert [t for t, attrs in page.tags if any(a.startswith("on") for a in attrs)] == []
    urls = [a.get("src") or a.get("href") for t, a in page.tags if t in ("script", "link")]
    assert any(u.endswith("/swagger-ui-bundle.js") for u in urls), urls
    assert any(u.endswith("/swagger-ui.css") for u in urls), urls
    for url in urls:
        assert url.startswith("/static/"), url  # never another origin
        served = client.get(url)
        assert served.status_code == 200, url
        assert served.data, url
    root = next(a for t, a in page.tags if a.get("id") == "swagger-ui")
    assert root["data-spec-url"] == "/api/v1/openapi.json"


def test_docs_page_without_swagger_ui_says_how_to_install_it(client, monkeypatch, tmp_path):
    monkeypatch.setattr("imgclass.web.pages.STATIC", tmp_path)  # no vendor directory there
    response = client.get("/api/docs")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "make install" in body and "swagger-ui-bundle.js" not in body
    assert 'href="/api/v1/openapi.json"' in body


def test_swagger_ui_is_installed():
    # make install copies it from npm's swagger-ui-dist; the wheel ships it as package data.
    assert (STATIC / openapi.SWAGGER_UI / "swagger-ui-bundle.js").is_file()
