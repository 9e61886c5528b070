"""IMGCLASS_TRUSTED_PROXIES: whose X-Forwarded-For decides the client address in user_dim."""

from __future__ import annotations

import pytest

from imgclass.app import create_app, services
from tests.conftest import fact_rows

FORWARDED = "198.51.100.7, 203.0.113.9"  # a forged first hop, then what our proxy appended


@pytest.fixture
def app_behind(settings):
    apps = []

    def make(hops: int):
        app = create_app(settings.model_copy(update={"trusted_proxies": hops}))
        apps.append(app)
        return app

    yield make
    for app in apps:
        services(app).engine.dispose()


@pytest.mark.parametrize(
    ("hops", "recorded"), [(0, "127.0.0.1"), (1, "203.0.113.9"), (2, "198.51.100.7")]
)
def test_client_address_comes_from_trusted_hops_only(app_behind, cat_jpeg, hops, recorded):
    app = app_behind(hops)
    resp = app.test_client().post(
        "/api/v1/predict",
        data=cat_jpeg,
        content_type="image/jpeg",
        headers={"X-Forwarded-For": FORWARDED},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    assert resp.status_code == 200
    (row,) = fact_rows(app)
    assert row["ip_address"] == recorded
