"""Real answers, checked against the spec: the paths a fuzzer cannot reach by chance.

schemathesis (test_fuzz_api.py) sends random bytes as images and random request ids as
feedback, so it mostly meets the error answers. Here every endpoint answers real requests
(photos, a recorded request id, a backup, each hostile-corpus case) and each answer must
have a documented status and match that status's schema and content type.
"""

from __future__ import annotations

import io

import pytest
import schemathesis
from schemathesis.core.failures import FailureGroup

from imgclass.app import services
from tests.hostile.corpus import build_cases


@pytest.fixture
def api(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    schema = schemathesis.openapi.from_dict(spec)

    def conforms(path: str, method: str, response) -> None:
        documented = spec["paths"][path][method.lower()]["responses"]
        assert str(response.status_code) in documented, (path, method, response.status_code)
        try:
            schema[path][method].validate_response(response)
        except FailureGroup as exc:  # name the answer that did not match
            pytest.fail(f"{method} {path} {response.status_code}: {exc}\n{response.data[:500]}")
        if response.status_code not in (414, 431):
            assert response.headers["X-Request-ID"]

    return conforms


@pytest.fixture
def keys(app, admin_key) -> dict[str, str]:
    _account, user_key = services(app).users.add("bob")
    return {
        "admin": {"Authorization": f"Bearer {admin_key}"},
        "user": {"Authorization": f"Bearer {user_key}"},
        "wrong": {"Authorization": "Bearer imgc_not-a-key"},
    }


def test_predict_answers_match_the_spec(client, api, cat_jpeg, coffee_jpeg):
    form = {"image": [(io.BytesIO(cat_jpeg), "cat.jpg"), (io.BytesIO(coffee_jpeg), "c.jpg")]}
    first = client.post("/api/v1/predict?top_k=3", data=form)
    assert first.status_code == 200
    api("/api/v1/predict", "POST", first)
    again = client.post(
        "/api/v1/predict?top_k=3", data={"image": (io.BytesIO(cat_jpeg), "cat.jpg")}
    )
    assert again.get_json()["results"][0]["cached"] is True
    api("/api/v1/predict", "POST", again)
    raw = client.post("/api/v1/predict?filename=x.jpg", data=cat_jpeg, content_type="image/jpeg")
    api("/api/v1/predict", "POST", raw)
    for bad in (
        client.post("/api/v1/predict?top_k=99", data=cat_jpeg, content_type="image/jpeg"),
        client.post("/api/v1/predict", data=b"{}", content_type="application/json"),
        client.post(
            "/api/v1/predict",
            data=cat_jpeg,
            content_type="image/jpeg",
            headers={"Authorization": "Bearer nope"},
        ),
    ):
        assert bad.status_code in (400, 401)
        api("/api/v1/predict", "POST", bad)


def test_every_hostile_input_is_answered_as_documented(client, api):
    for name, case in build_cases().items():
        response = client.post(
            "/api/v1/predict", data={"image": (io.BytesIO(case.content), case.filename)}
        )
        assert response.status_code == case.status, name
        api("/api/v1/predict", "POST", response)


def test_feedback_answers_match_the_spec(client, api, cat_jpeg, keys):
    predicted = client.post("/api/v1/predict", data=cat_jpeg, content_type="image/jpeg")
    request_id = predicted.get_json()["request_id"]
    answers = [
        client.post("/api/v1/feedback", json={"request_id": request_id, "class_id": 281}),
        client.post("/api/v1/feedback", json={"request_id": request_id, "label": "tabby"}),
        client.post("/api/v1/feedback", json={"request_id": request_id, "class_id": 281.0}),
        client.post("/api/v1/feedback", json={"request_id": "nope1234", "class_id": 1}),
        client.post("/api/v1/feedback", json={"request_id": request_id, "label": "unicorn"}),
        client.post("/api/v1/feedback", json=[1]),
        client.post("/api/v1/feedback", data="x", content_type="text/plain"),
        client.post("/api/v1/feedback", json={"request_id": request_id}, headers=keys["wrong"]),
    ]
    assert [a.status_code for a in answers] == [201, 200, 200, 404, 422, 400, 415, 401]
    for answer in answers:
        api("/api/v1/feedback", "POST", answer)


ADMIN_GETS = [
    "/api/v1/drift",
    "/api/v1/drift?fresh=true",
    "/api/v1/admin/backups",
    "/api/v1/analytics/cube?group_by=day,class&measures=requests,p95_time_ms&rollup=true",
    "/api/v1/analytics/cube?group_by=day,status&pivot=status",
    "/api/v1/analytics/cube?group_by=class&format=csv",
    "/api/v1/analytics/summary",
    "/api/v1/analytics/timeseries?grain=hour&measures=requests,errors",
    "/api/v1/analytics/events?limit=5",
    "/api/v1/analytics/concepts",
    "/api/v1/analytics/concepts?parent=animal",
]


def test_admin_answers_match_the_spec_for_every_caller(client, api, cat_jpeg, keys):
    client.post("/api/v1/predict", data=cat_jpeg, content_type="image/jpeg")
    client.post("/api/v1/predict", data=b"nope", content_type="image/jpeg")
    created = client.post("/api/v1/admin/backups", headers=keys["admin"])
    assert created.status_code == 201
    api("/api/v1/admin/backups", "POST", created)
    for url in ADMIN_GETS:
        path = url.split("?")[0]
        answers = {
            "admin": client.get(url, headers=keys["admin"]),
            "user": client.get(url, headers=keys["user"]),
            "anonymous": client.get(url),
        }
        assert {k: r.status_code for k, r in answers.items()} == {
            "admin": 200,
            "user": 403,
            "anonymous": 401,
        }, url
        for answer in answers.values():
            api(path, "GET", answer)
    bad = client.get("/api/v1/analytics/cube?group_by=nope", headers=keys["admin"])
    assert bad.status_code == 400
    api("/api/v1/analytics/cube", "GET", bad)


def test_operational_endpoints_and_pages_match_the_spec(client, api):
    for path in ("/healthz", "/readyz", "/metrics", "/api/v1/models", "/", "/dashboard"):
        response = client.get(path)
        assert response.status_code == 200, path
        api(path, "GET", response)


def test_a_wrong_method_gets_405_with_allow(client):
    # RFC 9110: a 405 must say which methods the resource has (found by schemathesis).
    response = client.delete("/api/v1/predict")
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"POST", "OPTIONS"}
