"""Access: every admin operation refuses anonymous callers (401) and plain users (403) and
answers an admin key; the dashboard's data is admin-only; keys are stored only hashed.

The operations come from the app itself (its OpenAPI spec, which
tests/api/test_openapi.py holds equal to the URL map), so a new endpoint is checked
the day it is added: admin-only ones must refuse, and the others must not ask for a key.
"""

from __future__ import annotations

import hashlib
import io
import re

import pytest
from sqlalchemy import select

from imgclass.app import services
from imgclass.warehouse.schema import api_user, metadata
from imgclass.web.pages import STATIC

pytestmark = pytest.mark.backends

ADMIN_PREFIXES = ("/api/v1/admin/", "/api/v1/analytics/")
ADMIN_ONLY = [{"apiKey": []}]  # a key is required; the anonymous alternative ({}) is absent
METHODS = {"get", "put", "post", "delete", "patch"}


def operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def concrete(path: str) -> str:
    """A URL for an OpenAPI path: each {parameter} filled with a harmless value."""
    return re.sub(r"\{[^}]+\}", "x", path)


@pytest.fixture
def spec(client) -> dict:
    return client.get("/api/v1/openapi.json").get_json()


@pytest.fixture
def keys(app, admin_key) -> dict[str, dict]:
    _, user_key = services(app).users.add("alice")
    return {
        "anonymous": {},
        "user": {"Authorization": f"Bearer {user_key}"},
        "admin": {"Authorization": f"Bearer {admin_key}"},
    }


def call(client, method: str, path: str, headers: dict):
    return client.open(concrete(path), method=method.upper(), headers=headers)


def test_admin_operations_are_the_ones_under_the_admin_paths(spec):
    admin = {(p, m) for p, m, op in operations(spec) if op.get("security") == ADMIN_ONLY}
    under = {(p, m) for p, m, _ in operations(spec) if p.startswith(ADMIN_PREFIXES)}
    assert under <= admin  # nothing under an admin path is open to a plain user
    assert ("/api/v1/admin/backups", "post") in admin and ("/api/v1/drift", "get") in admin
    assert len(admin) >= 8


def test_every_admin_operation_refuses_anonymous_and_plain_users(client, spec, keys):
    admin_ops = [(p, m, op) for p, m, op in operations(spec) if op.get("security") == ADMIN_ONLY]
    for path, method, operation in admin_ops:
        anonymous = call(client, method, path, keys["anonymous"])
        assert anonymous.status_code == 401, (method, path, anonymous.status_code)
        assert anonymous.get_json()["error"]["code"] == "unauthorized"
        user = call(client, method, path, keys["user"])
        assert user.status_code == 403, (method, path, user.status_code)
        assert user.get_json()["error"]["code"] == "forbidden"
        admin = call(client, method, path, keys["admin"])
        # Accepted: an answer the operation documents (a backup on PostgreSQL is a 501).
        assert admin.status_code not in (401, 403), (method, path, admin.get_json())
        assert str(admin.status_code) in operation["responses"], (method, path, admin.get_json())
        assert admin.status_code != 500, (method, path, admin.get_json())


def test_every_other_operation_answers_without_a_key(client, spec, keys):
    # The converse: an operation that asks for a key but is documented as open (or the
    # reverse) would make the admin set above wrong.
    for path, method, operation in operations(spec):
        if operation.get("security") == ADMIN_ONLY:
            continue
        for caller in ("anonymous", "user"):
            response = call(client, method, path, keys[caller])
            assert response.status_code not in (401, 403), (caller, method, path)


def test_the_dashboard_page_carries_no_data_and_its_api_needs_an_admin_key(
    client, spec, keys, cat_jpeg
):
    secret_name = "private-holiday-photo.jpg"
    posted = client.post(
        "/api/v1/predict",
        data={"image": (io.BytesIO(cat_jpeg), secret_name)},
        content_type="multipart/form-data",
    )
    assert posted.status_code == 200
    page = client.get("/dashboard")
    assert page.status_code == 200  # the page is a shell: the data comes from the API
    assert secret_name not in page.get_data(as_text=True)
    script = (STATIC / "dashboard.js").read_text()
    base = re.search(r'const API = "([^"]+)"', script).group(1)
    # `${API}/summary` and `api("/cube", …)`: every path the page's script asks for.
    found = re.findall(r'\$\{API\}(/[a-z_]+)|\bapi\("(/[a-z_]+)"', script)
    called = {base + (literal or through_api) for literal, through_api in found}
    assert len(called) >= 4, called  # summary, timeseries, cube, events, concepts
    admin = {p for p, m, op in operations(spec) if op.get("security") == ADMIN_ONLY}
    assert called <= admin, called - admin
    for path in called:
        assert client.get(path).status_code == 401
        assert client.get(path, headers=keys["user"]).status_code == 403
        answer = client.get(path, headers=keys["admin"])
        assert answer.status_code == 200, (path, answer.get_json())
    events = client.get("/api/v1/analytics/events", headers=keys["admin"])
    assert secret_name in events.get_data(as_text=True)  # the data is there, for admins


def test_keys_are_stored_only_as_their_sha256(app, admin_key, keys):
    user_key = keys["user"]["Authorization"].removeprefix("Bearer ")
    engine = services(app).engine
    with engine.connect() as conn:
        stored = {r.username: r.key_hash for r in conn.execute(select(api_user))}
        cells = [
            str(value)
            for table in metadata.sorted_tables
            for row in conn.execute(select(table))
            for value in row
        ]
    assert stored["alice"] == hashlib.sha256(user_key.encode()).hexdigest()
    assert stored["admin"] == hashlib.sha256(admin_key.encode()).hexdigest()
    for key in (admin_key, user_key):
        assert not any(key in cell for cell in cells)  # in no column of any table
