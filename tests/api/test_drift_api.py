"""GET /api/v1/drift: admin only, and an honest answer on a warehouse with too few events."""

from __future__ import annotations

import math

from imgclass.app import services
from imgclass.ops.metrics import REGISTRY


def test_drift_needs_an_admin_key(app, client):
    assert client.get("/api/v1/drift").status_code == 401
    _, key = services(app).users.add("viewer")
    resp = client.get("/api/v1/drift", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    resp = client.get("/api/v1/drift", headers={"Authorization": "Bearer imgc_wrong"})
    assert resp.status_code == 401


def test_an_empty_warehouse_reports_insufficient_data_not_zero(client, admin_key, cat_jpeg):
    client.post("/api/v1/predict", data=cat_jpeg, content_type="image/jpeg")
    resp = client.get("/api/v1/drift", headers={"Authorization": f"Bearer {admin_key}"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "insufficient_data"
    assert body["reference"]["events"] == 1 and body["recent"]["events"] == 0
    assert "at least 200" in body["message"]
    assert {f["psi"] for f in body["features"]} == {None}
    # The gauges say "unknown" (NaN), never a reassuring 0.
    value = REGISTRY.get_sample_value("imgclass_drift_psi", {"feature": "brightness"})
    assert math.isnan(value)
    assert REGISTRY.get_sample_value("imgclass_drift_threshold") == 0.2


def test_fresh_must_be_a_boolean(client, admin_key):
    resp = client.get("/api/v1/drift?fresh=maybe", headers={"Authorization": f"Bearer {admin_key}"})
    assert resp.status_code == 400 and "fresh" in resp.get_json()["error"]["message"]


def test_an_unknown_parameter_is_refused_by_name(client, admin_key):
    headers = {"Authorization": f"Bearer {admin_key}"}
    resp = client.get("/api/v1/drift?foo=1", headers=headers)
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["message"] == "foo: unknown parameter; use fresh"
    # A misspelt fresh is not mistaken for the background report either.
    assert client.get("/api/v1/drift?frsh=true", headers=headers).status_code == 400
    assert client.get("/api/v1/drift?fresh=true", headers=headers).status_code == 200
    assert client.get("/api/v1/drift?foo=1").status_code == 401  # the key comes first
