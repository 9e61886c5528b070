"""Every case of the hostile corpus through POST /api/v1/predict: the documented status and
code, never a 500, a fact row for every request, and hostile names stored as harmless data."""

from __future__ import annotations

import io

import pytest

from tests.conftest import fact_rows
from tests.hostile.corpus import build_cases

CASES = build_cases()


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(client, app, name):
    case = CASES[name]
    resp = client.post(
        "/api/v1/predict",
        data={"image": (io.BytesIO(case.content), case.filename)},
        content_type="multipart/form-data",
    )
    body = resp.get_json()
    assert resp.status_code == case.status, body
    if case.code:
        assert body["error"]["code"] == case.code
        assert body["error"]["request_id"] == resp.headers["X-Request-ID"]
    (row,) = fact_rows(app)
    assert row["status_code"] == case.status and row["error_code"] == case.code
    stored_name = row["image_filename"]
    assert "\0" not in stored_name and len(stored_name) <= 255


def test_filenames_are_stored_as_data(client, app):
    for name in ("path traversal name", "NUL in name", "10 KB unicode name"):
        case = CASES[name]
        client.post(
            "/api/v1/predict",
            data={"image": (io.BytesIO(case.content), case.filename)},
            content_type="multipart/form-data",
        )
    names = [row["image_filename"] for row in fact_rows(app)]
    assert names[0] == "../../../../etc/passwd"  # kept verbatim as text; never opened
    assert names[1] == "cat.jpg.exe"  # control characters dropped
    assert names[2] == ("猫" * 3400 + ".jpg")[:255]


def test_more_files_than_allowed(client, app, settings, cat_jpeg):
    files = [(io.BytesIO(cat_jpeg), f"{i}.jpg") for i in range(settings.max_files_per_request + 1)]
    resp = client.post("/api/v1/predict", data={"image": files}, content_type="multipart/form-data")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "too_many_files"
