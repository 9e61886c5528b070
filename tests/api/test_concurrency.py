"""Concurrent requests from threads: every acknowledged request has exactly its rows."""

from __future__ import annotations

import io
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from imgclass.app import services
from tests.conftest import fact_rows


@pytest.mark.backends
def test_threads_lose_and_duplicate_nothing(app, cat_jpeg, coffee_jpeg):
    def send(i: int):
        files = [(io.BytesIO(cat_jpeg if i % 2 else coffee_jpeg), f"{i}.jpg")]
        if i % 5 == 0:
            files.append((io.BytesIO(cat_jpeg), f"{i}-b.jpg"))
        resp = app.test_client().post(
            "/api/v1/predict", data={"image": files}, content_type="multipart/form-data"
        )
        return resp.status_code, resp.get_json()["request_id"], len(files)

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(send, range(60)))
    assert {status for status, _, _ in outcomes} == {200}
    expected = {rid: n for _, rid, n in outcomes}
    assert len(expected) == 60
    assert Counter(r["request_id"] for r in fact_rows(app)) == expected
    with services(app).engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM user_dim")).scalar_one() == 1
        assert (
            conn.execute(text("SELECT COUNT(*) FROM image_dim")).scalar_one() == 1 + 60 + 12
        )  # the none member, i.jpg, and i-b.jpg for every fifth
