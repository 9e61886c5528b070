"""The pages in a real browser: Debian's headless Chromium, driven by Playwright, against a
real ``imgclass serve``. Each test also checks that the page asked nothing of any other
origin and raised no script error (a CSP violation included).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from playwright import sync_api as playwright_api

from tests.conftest import CAT_CLASSES, ESPRESSO
from tests.support.system import require_binary

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


# ---- the dashboard ---------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(server, model_dir, cat_jpeg):
    """Demo events plus real predictions, one of them with a hostile file name."""
    from tests.support.server import environment, imgclass_command

    base, data_dir = server
    subprocess.run(
        imgclass_command("demo", "seed", "--events", "3000", "--days", "14"),
        env=environment(data_dir, model_dir),
        check=True,
        capture_output=True,
    )
    post_image(base, cat_jpeg, HOSTILE_NAME)
    key = (data_dir / "admin-token").read_text().strip()
    return base, key


def post_image(base: str, data: bytes, filename: str, key: str | None = None) -> dict:
    boundary = "imgclass-test-boundary"
    body = (
        (
            f"--{boundary}\r\nContent-Disposition: form-data; name=image; "
            f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(base + "/api/v1/predict", data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def api(base: str, key: str, path: str, **params) -> dict:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v not in (None, "")})
    req = urllib.request.Request(
        f"{base}/api/v1/analytics/{path}?{query}", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def sign_in(page, base: str, key: str, fragment: str = "") -> None:
    page.goto(f"{base}/dashboard{fragment}")
    page.fill("#admin-key", key)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#board[data-state=ready]")


def generation(page) -> int:
    return int(page.get_attribute("#board", "data-generation") or 0)


def wait_for_refresh(page, after: int) -> None:
    page.wait_for_function(
        """n => {
            const board = document.getElementById('board');
            return Number(board.dataset.generation || 0) > n && board.dataset.state === 'ready';
        }""",
        arg=after,
    )


def chart(page, canvas_id: str) -> dict | None:
    """The data a chart actually draws (labels and datasets), None when there is no chart."""
    return page.evaluate(
        """id => {
            const c = window.Chart && Chart.getChart(document.getElementById(id));
            return c ? {labels: c.data.labels,
                        datasets: c.data.datasets.map(d => ({label: d.label, data: d.data}))}
                     : null;
        }""",
        canvas_id,
    )


def drawn_total(page, canvas_id: str) -> int:
    data = chart(page, canvas_id)
    assert data is not None, f"{canvas_id} is not drawn"
    return sum(sum(v or 0 for v in ds["data"]) for ds in data["datasets"])


def table(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#events tbody tr",
        """rows => rows.map(tr => {
            const cells = [...tr.children].map(td => td.textContent);
            return {user: cells[1], class: tr.children[2].title, status: cells[5], file: cells[7]};
        })""",
    )


def test_a_wrong_key_is_refused(page, seeded):
    base, _ = seeded
    page.goto(base + "/dashboard")
    page.fill("#admin-key", "not-a-key")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "not accepted" in page.inner_text("#login-error")
    assert page.get_attribute("#login-error", "data-status") == "401"
    assert page.is_hidden("#board")
    assert page.evaluate("sessionStorage.getItem('imgclass.adminKey')") is None


def test_a_non_admin_key_is_refused(page, seeded, server, model_dir):
    from tests.support.server import environment, imgclass_command

    base, _ = seeded
    _, data_dir = server
    out = subprocess.run(
        imgclass_command("users", "add", "viewer"),
        env=environment(data_dir, model_dir),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    key = out.strip().split()[-1]
    page.goto(base + "/dashboard")
    page.fill("#admin-key", key)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "not an admin key" in page.inner_text("#login-error")
    assert page.get_attribute("#login-error", "data-status") == "403"


def test_dashboard_draws_the_warehouse_and_a_user_filter_slices_it(page, seeded):
    base, key = seeded
    everything = api(base, key, "summary")
    total = everything["totals"]["requests"]
    assert total > 3000  # the demo events and the real predictions

    sign_in(page, base, key)
    # Every seeded event is within the default 30 days, so the charts show all of them.
    assert drawn_total(page, "chart-requests") == total
    latency = chart(page, "chart-latency")
    assert [d["label"] for d in latency["datasets"]] == ["p50", "p95", "p99"]
    assert any(v for v in latency["datasets"][1]["data"])
    users = chart(page, "chart-users")
    assert users["labels"] == [u["user"] for u in everything["top_users"]]
    classes = chart(page, "chart-classes")
    counts = classes["datasets"][0]["data"]
    assert counts and counts == sorted(counts, reverse=True)
    assert "none" not in classes["labels"]  # failed requests have no class
    assert sum(chart(page, "chart-models")["datasets"][0]["data"]) > 0
    assert drawn_total(page, "chart-errors") == everything["totals"]["errors"]
    assert len(table(page)) == 50
    assert page.inner_text('[data-kpi="requests"]') == f"{total:,}"

    user = everything["top_users"][1]["user"]
    expected = api(base, key, "summary", user=user)["totals"]["requests"]
    assert 0 < expected < total
    before = generation(page)
    page.fill("#f-user", user)
    page.press("#f-user", "Enter")
    wait_for_refresh(page, before)
    assert drawn_total(page, "chart-requests") == expected
    assert chart(page, "chart-users")["labels"] == [user]
    rows = table(page)
    assert rows and {r["user"] for r in rows} == {user}
    assert page.inner_text('[data-kpi="requests"]') == f"{expected:,}"
    assert concepts_shown(page) == {
        c["wnid"]: c["requests"]
        for c in api(base, key, "concepts", user=user)["children"]
        if c["requests"]  # concepts with no request are not listed
    }
    assert page.inner_text("#chips").startswith(f"User: {user}")
    assert f"user={user}" in page.url

    # The filter lives in the URL fragment and the key in the tab: a reload keeps both.
    page.reload()
    page.wait_for_selector("#board[data-state=ready]")
    assert page.input_value("#f-user") == user
    assert drawn_total(page, "chart-requests") == expected


def test_a_custom_time_range_and_the_grain_picker(page, seeded):
    base, key = seeded
    days = api(base, key, "timeseries", grain="day", measures="requests")["rows"]
    first, last = days[2]["time"], days[4]["time"]  # three days inside the seeded span
    expected = api(base, key, "summary", **{"from": first, "to": last})["totals"]["requests"]
    assert expected == sum(r["requests"] for r in days[2:5])

    sign_in(page, base, key)
    everything = drawn_total(page, "chart-requests")
    page.select_option("#f-range", "custom")
    page.wait_for_selector("#board[data-state=ready]")
    before = generation(page)
    page.fill("#f-from", first)
    page.fill("#f-to", last)
    page.click("#filters button[type=submit]")
    wait_for_refresh(page, before)
    requests = chart(page, "chart-requests")
    assert requests["labels"] == [first, days[3]["time"], last]
    assert drawn_total(page, "chart-requests") == expected < everything
    assert page.inner_text('[data-kpi="requests"]') == f"{expected:,}"
    assert all(first <= r["time"][:10] <= last for r in events_shown(page))

    before = generation(page)
    page.select_option("#f-grain", "hour")
    wait_for_refresh(page, before)
    hourly = chart(page, "chart-requests")
    assert len(hourly["labels"]) == 72  # every hour of the three days, empty ones included
    assert drawn_total(page, "chart-requests") == expected
    assert "per hour" in page.inner_text("#panel-requests header")


PANELS = [
    "panel-requests",
    "panel-latency",
    "panel-classes",
    "panel-users",
    "panel-errors",
    "panel-models",
    "panel-concepts",
    "panel-events",
]


def test_a_reversed_range_is_refused_and_failed_panels_say_so(page, seeded):
    base, key = seeded
    total = api(base, key, "summary")["totals"]["requests"]
    sign_in(page, base, key)
    before = generation(page)
    page.select_option("#f-range", "custom")
    wait_for_refresh(page, before)

    # From after To: the form says so and sends nothing; the board keeps what it shows.
    before = generation(page)
    shown = page.inner_text('[data-kpi="requests"]')
    page.fill("#f-from", "2026-12-05")
    page.fill("#f-to", "2026-12-01")
    page.click("#filters button[type=submit]")
    assert page.is_visible("#filters-error")
    assert "“To” must be the same day as “From” or later" in page.inner_text("#filters-error")
    assert page.get_attribute("#f-to", "aria-invalid") == "true"
    assert page.get_attribute("#board", "data-state") == "ready"
    assert generation(page) == before
    assert not [u for u in page.watch.requests if "from=2026-12-05" in u]
    assert page.inner_text('[data-kpi="requests"]') == shown

    # A filter the API refuses (a user name longer than 512 characters): every call fails,
    # and no panel keeps the figures of the previous filters as if they were current.
    before = generation(page)
    page.select_option("#f-range", "30d")
    wait_for_refresh(page, before)
    assert page.is_hidden("#filters-error")
    assert page.inner_text('[data-kpi="requests"]') == f"{total:,}"
    before = generation(page)
    page.fill("#f-user", "x" * 600)
    page.press("#f-user", "Enter")
    wait_for_refresh(page, before)
    assert "longer than 512 characters" in page.inner_text("#board-error")
    assert page.inner_text('[data-kpi="requests"]') == "–"
    assert "Could not load: user:" in page.inner_text("#kpis .panel-error")
    for panel in PANELS:
        assert "is-failed" in page.get_attribute(f"#{panel}", "class"), panel
        assert page.is_visible(f"#{panel} .panel-error"), panel
    for stale in ("#chart-requests", "#chart-classes", "#concept-children", "#events"):
        assert page.is_hidden(stale), stale

    # Back to a filter that works: the panels draw again and the failure notes go.
    before = generation(page)
    page.fill("#f-user", "")
    page.press("#f-user", "Enter")
    wait_for_refresh(page, before)
    assert page.is_hidden("#board-error")
    assert page.inner_text('[data-kpi="requests"]') == f"{total:,}"
    assert page.query_selector_all(".is-failed") == []
    assert page.is_hidden("#kpis .panel-error")
    assert drawn_total(page, "chart-requests") == total
    assert page.is_visible("#chart-requests")


def concepts_shown(page) -> dict[str, int]:
    return {
        wnid: int(count.replace(",", ""))
        for wnid, count in page.eval_on_selector_all(
            "#concept-children button",
            "bs => bs.map(b => [b.dataset.wnid, b.querySelector('.count').textContent])",
        )
    }


def events_shown(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#events tbody tr", "rows => rows.map(tr => ({time: tr.children[0].textContent}))"
    )


def test_clicking_a_class_bar_filters_by_that_class(page, seeded):
    base, key = seeded
    sign_in(page, base, key)
    top = api(base, key, "cube", group_by="class", status="2xx", order="-requests", limit=1)
    top_class = top["rows"][0]["class"]
    assert chart(page, "chart-classes")["labels"][0] == top_class.replace("_", " ")[:28]
    box = page.locator("#chart-classes").bounding_box()
    bar = page.evaluate(
        "() => { const b = Chart.getChart(document.getElementById('chart-classes'))"
        ".getDatasetMeta(0).data[0]; return {x: b.base + (b.x - b.base) / 2, y: b.y}; }"
    )
    before = generation(page)
    page.mouse.click(box["x"] + bar["x"], box["y"] + bar["y"])
    wait_for_refresh(page, before)
    assert page.input_value("#f-class") == top_class
    expected = api(base, key, "summary", **{"class": top_class})["totals"]["requests"]
    assert expected == top["rows"][0]["requests"]
    assert drawn_total(page, "chart-requests") == expected
    assert chart(page, "chart-classes")["datasets"][0]["data"] == [expected]
    rows = table(page)
    assert rows and {r["class"] for r in rows} == {top_class}


def test_concept_drill_down_from_animal_to_a_breed(page, seeded):
    base, key = seeded
    breed = api(base, key, "cube", group_by="class", concept="dog", order="-requests", limit=1)
    breed_class = breed["rows"][0]["class"]
    path = api(base, key, "concepts", parent=breed_class)["path"]
    names = [node["name"] for node in path]
    assert names[0] == "animal" and "dog" in names and names[-1] == breed_class

    sign_in(page, base, key)
    drawn = [drawn_total(page, "chart-requests")]
    for node in path:
        before = generation(page)
        page.click(f'#concept-children button[data-wnid="{node["wnid"]}"]')
        wait_for_refresh(page, before)
        expected = api(base, key, "summary", concept=node["wnid"])["totals"]["requests"]
        drawn.append(drawn_total(page, "chart-requests"))
        assert drawn[-1] == expected, node["name"]
        crumbs = page.eval_on_selector_all(
            "#concept-path button", "bs => bs.map(b => b.textContent)"
        )
        assert crumbs[-1] == node["name"].replace("_", " ")
    assert drawn == sorted(drawn, reverse=True) and drawn[-1] < drawn[1] < drawn[0]
    # At the breed: one class left, and nothing narrower to drill into.
    assert chart(page, "chart-classes")["labels"] == [breed_class.replace("_", " ")[:28]]
    assert page.is_visible("#panel-concepts .empty")
    assert page.inner_text("#chips").startswith(f"Concept: {breed_class.replace('_', ' ')}")
    # Back up to "dog" through the breadcrumb.
    before = generation(page)
    page.click("#concept-path button:text-is('dog')")
    wait_for_refresh(page, before)
    dog = api(base, key, "summary", concept="dog")["totals"]["requests"]
    assert drawn_total(page, "chart-requests") == dog


def test_hostile_file_name_in_an_event_is_text(page, seeded):
    base, key = seeded
    sign_in(page, base, key)
    files = [r["file"] for r in table(page)]
    assert HOSTILE_NAME in files
    assert page.query_selector_all("#events tbody img") == []
    assert page.evaluate("window.__pwned") is None


def test_sign_out_forgets_the_key(page, seeded):
    base, key = seeded
    sign_in(page, base, key)
    page.click("#sign-out")
    assert page.is_visible("#login")
    assert page.evaluate("sessionStorage.getItem('imgclass.adminKey')") is None
    page.reload()
    assert page.is_visible("#login") and page.is_hidden("#board")


def test_dashboard_without_the_chart_library_still_shows_figures(page, seeded):
    base, key = seeded
    page.route("**/static/vendor/**", lambda route: route.fulfill(status=404, body="missing"))
    sign_in(page, base, key)
    assert page.is_visible("#charts-missing")
    assert "make install" in page.inner_text("#charts-missing")
    assert page.evaluate("typeof window.Chart") == "undefined"
    total = api(base, key, "summary")["totals"]["requests"]
    assert page.inner_text('[data-kpi="requests"]') == f"{total:,}"
    assert len(table(page)) == 50
