"""POST /api/v1/predict: results for real photos, and every request lands in the star schema.

The tests that check fact rows run on SQLite and on PostgreSQL (``backends``).
"""

from __future__ import annotations

import io

import pytest

from tests.conftest import CAT_CLASSES, ESPRESSO, fact_count, fact_rows, jpeg_bytes
from tests.vision.hostile import animated_gif, exif_rotated_jpeg


def post_files(client, files, query="", **kw):
    data = {"image": [(io.BytesIO(content), name) for name, content in files]}
    return client.post(
        f"/api/v1/predict{query}", data=data, content_type="multipart/form-data", **kw
    )


@pytest.mark.backends
def test_a_photo_gets_its_class_and_one_fact_row(client, app, cat_jpeg):
    resp = post_files(client, [("chelsea.jpg", cat_jpeg)], headers={"User-Agent": "pytest-agent"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["model"]["name"] == "efficientnet-lite0"
    assert resp.headers["X-Request-ID"] == body["request_id"]
    (result,) = body["results"]
    assert result["filename"] == "chelsea.jpg" and result["time_ms"] > 0
    assert len(result["predictions"]) == 5
    assert result["predictions"][0]["class_id"] in CAT_CLASSES
    assert set(result["predictions"][0]) == {"class_id", "label", "score"}

    (row,) = fact_rows(app)
    assert row["request_id"] == body["request_id"]
    assert (row["status_code"], row["error_code"], row["request_count"]) == (200, None, 1)
    assert row["class_id"] == result["predictions"][0]["class_id"]
    assert abs(row["confidence"] - result["predictions"][0]["score"]) < 1e-5
    assert (row["username"], row["user_agent"]) == ("anonymous", "pytest-agent")
    assert (row["image_filename"], row["width"], row["height"], row["format"]) == (
        "chelsea.jpg",
        451,
        300,
        "JPEG",
    )
    assert row["bytes"] == len(cat_jpeg) and row["model_name"] == "efficientnet-lite0"
    assert 60 < row["brightness"] < 200  # a daylight photo, neither black nor blown out
    assert (row["cache_hit"], row["is_fallback"]) == (False, False)


@pytest.mark.backends
def test_several_files_give_results_in_order_and_a_row_each(client, app, cat_jpeg, coffee_jpeg):
    files = [("a-coffee.jpg", coffee_jpeg), ("b-cat.jpg", cat_jpeg), ("c-coffee.jpg", coffee_jpeg)]
    resp = post_files(client, files, "?top_k=1")
    assert resp.status_code == 200
    results = resp.get_json()["results"]
    assert [r["filename"] for r in results] == ["a-coffee.jpg", "b-cat.jpg", "c-coffee.jpg"]
    assert [len(r["predictions"]) for r in results] == [1, 1, 1]
    assert results[0]["predictions"][0]["class_id"] == ESPRESSO
    assert results[1]["predictions"][0]["class_id"] in CAT_CLASSES
    rows = fact_rows(app)
    assert len(rows) == 3 and len({r["request_id"] for r in rows}) == 1
    assert [r["image_filename"] for r in rows] == ["a-coffee.jpg", "b-cat.jpg", "c-coffee.jpg"]


@pytest.mark.backends
def test_raw_body_with_image_content_type(client, app, coffee_jpeg):
    resp = client.post(
        "/api/v1/predict?filename=cup.jpg&top_k=2", data=coffee_jpeg, content_type="image/jpeg"
    )
    assert resp.status_code == 200
    result = resp.get_json()["results"][0]
    assert result["filename"] == "cup.jpg" and result["predictions"][0]["label"] == "espresso"
    assert fact_rows(app)[0]["image_filename"] == "cup.jpg"


def test_unusual_but_valid_images_are_classified(client, photos):
    cat = photos["chelsea"]
    cases = {
        "cmyk.jpg": jpeg_bytes(cat.convert("CMYK")),
        "rotated.jpg": exif_rotated_jpeg(cat),
        "animated.gif": animated_gif([cat, cat.rotate(180)]),
    }
    resp = post_files(client, list(cases.items()), "?top_k=5")
    assert resp.status_code == 200
    for result in resp.get_json()["results"]:
        top5 = [p["class_id"] for p in result["predictions"]]
        assert set(top5) & set(CAT_CLASSES), (result["filename"], top5)


@pytest.mark.backends
def test_filename_is_only_data(client, app, cat_jpeg):
    resp = post_files(client, [("../../etc/passwd\x00.jpg", cat_jpeg)])
    assert resp.status_code == 200
    assert resp.get_json()["results"][0]["filename"] == "../../etc/passwd.jpg"
    assert fact_rows(app)[0]["image_filename"] == "../../etc/passwd.jpg"


@pytest.mark.backends
def test_the_same_image_twice_reuses_its_dimension_row(client, app, cat_jpeg):
    for _ in range(2):
        assert post_files(client, [("cat.jpg", cat_jpeg)]).status_code == 200
    rows = fact_rows(app)
    assert len(rows) == 2 and rows[0]["image_id"] == rows[1]["image_id"]
    from sqlalchemy import text

    from imgclass.app import services

    with services(app).engine.connect() as conn:
        assert (
            conn.execute(text("SELECT COUNT(*) FROM image_dim WHERE image_key <> 0")).scalar_one()
            == 1
        )
    assert fact_count(app) == 2


@pytest.mark.backends
def test_hostile_text_is_stored_as_data(client, app, cat_jpeg):
    # PostgreSQL enforces column lengths and refuses NUL characters, where SQLite stores
    # anything: a request must not fail (or go unrecorded) because of what a client sent.
    agent = "evil\x00agent " + "é" * 600
    name = "ünïcødé 🐱 " * 40 + ".jpg"
    resp = post_files(client, [(name, cat_jpeg)], headers={"User-Agent": agent})
    assert resp.status_code == 200, resp.get_json()
    (row,) = fact_rows(app)
    assert row["user_agent"] == agent[:512].replace("\x00", "")
    assert row["image_filename"] == name[:255]
