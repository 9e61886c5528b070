"""Bearer keys: anonymous by default, required on demand, the user recorded in user_dim."""

from __future__ import annotations

import io
import stat

from imgclass.app import create_app, services
from tests.conftest import fact_rows


def post(client, jpeg, **headers):
    return client.post(
        "/api/v1/predict",
        data={"image": (io.BytesIO(jpeg), "cat.jpg")},
        content_type="multipart/form-data",
        headers=headers,
    )


def test_first_start_creates_an_admin_and_a_private_token_file(settings, app, admin_key):
    path = settings.admin_token_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert services(app).users.authenticate(admin_key).is_admin
    create_app(settings)  # a second start creates no second admin
    assert [a.username for a in services(app).users.list()] == ["admin"]


def test_key_user_is_recorded(app, client, cat_jpeg):
    _, key = services(app).users.add("alice")
    assert post(client, cat_jpeg, Authorization=f"Bearer {key}").status_code == 200
    assert post(client, cat_jpeg).status_code == 200
    assert [r["username"] for r in fact_rows(app)] == ["alice", "anonymous"]


def test_bad_keys_are_refused_even_when_auth_is_optional(app, client, cat_jpeg):
    _, key = services(app).users.add("bob")
    services(app).users.revoke("bob")
    for header in (f"Bearer {key}", "Bearer imgc_made_up", "Basic dXNlcjpwYXNz", "Bearer"):
        resp = post(client, cat_jpeg, Authorization=header)
        assert resp.status_code == 401, header
        assert resp.get_json()["error"]["code"] == "unauthorized"
    assert {r["status_code"] for r in fact_rows(app)} == {401}


def test_required_auth_refuses_anonymous(settings, cat_jpeg):
    app = create_app(settings.model_copy(update={"require_auth": True}))
    client = app.test_client()
    assert post(client, cat_jpeg).status_code == 401
    _, key = services(app).users.add("carol")
    assert post(client, cat_jpeg, Authorization=f"Bearer {key}").status_code == 200
    assert [(r["status_code"], r["username"]) for r in fact_rows(app)] == [
        (401, "anonymous"),
        (200, "carol"),
    ]
