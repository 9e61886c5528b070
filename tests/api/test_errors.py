"""Every bad input gets its status and a JSON error naming the problem, and is recorded."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest

from imgclass.app import create_app, services
from imgclass.warehouse.db import make_engine
from tests.conftest import fact_rows
from tests.support.server import free_port
from tests.vision.hostile import png_bomb


def post(client, content: bytes, name="upload.jpg", query=""):
    return client.post(
        f"/api/v1/predict{query}",
        data={"image": (io.BytesIO(content), name)},
        content_type="multipart/form-data",
    )


def assert_error(resp, status: int, code: str):
    assert resp.status_code == status, resp.get_data(as_text=True)
    error = resp.get_json()["error"]
    assert error["code"] == code
    assert error["message"] and error["request_id"] == resp.headers["X-Request-ID"]
    assert "Traceback" not in resp.get_data(as_text=True)
    return error


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb(30000)


@pytest.mark.backends
def test_zero_bytes(client, app):
    assert_error(post(client, b""), 400, "empty_file")
    (row,) = fact_rows(app)
    assert (row["status_code"], row["error_code"], row["class_id"], row["image_id"]) == (
        400,
        "empty_file",
        -1,
        "none",
    )


def test_no_file_field(client):
    resp = client.post(
        "/api/v1/predict",
        data={"photo": (io.BytesIO(b"x"), "a.jpg")},
        content_type="multipart/form-data",
    )
    assert "'photo'" in assert_error(resp, 400, "no_image")["message"]


def test_no_body_or_json_body(client):
    assert_error(client.post("/api/v1/predict"), 400, "no_image")
    assert_error(client.post("/api/v1/predict", json={"image": "x"}), 400, "no_image")


@pytest.mark.backends
def test_text_file_named_jpg(client, app):
    assert_error(post(client, b"just some text\n" * 20, "cat.jpg"), 415, "unsupported_media_type")
    (row,) = fact_rows(app)
    assert (row["status_code"], row["image_filename"], row["width"]) == (415, "cat.jpg", None)


def test_truncated_jpeg(client, cat_jpeg):
    assert_error(post(client, cat_jpeg[:3000]), 422, "corrupt_image")


def test_decompression_bomb(client, bomb):
    error = assert_error(post(client, bomb, "bomb.png"), 422, "image_too_large")
    assert "30000x30000" in error["message"]


def test_one_bad_file_fails_the_request_and_names_the_file(client, app, cat_jpeg):
    resp = client.post(
        "/api/v1/predict",
        data={"image": [(io.BytesIO(cat_jpeg), "good.jpg"), (io.BytesIO(b"nope"), "bad.jpg")]},
        content_type="multipart/form-data",
    )
    assert "file 2 ('bad.jpg')" in assert_error(resp, 415, "unsupported_media_type")["message"]
    assert [r["status_code"] for r in fact_rows(app)] == [415]


@pytest.mark.parametrize(
    "value", ["0", "21", "-1", "abc", "1.5", "", "5; DROP TABLE api_event_fact"]
)
def test_bad_top_k(client, cat_jpeg, value):
    assert (
        "top_k"
        in assert_error(post(client, cat_jpeg, query=f"?top_k={value}"), 400, "invalid_parameter")[
            "message"
        ]
    )


def test_body_over_the_size_limit(settings, cat_jpeg):
    app = create_app(settings.model_copy(update={"max_upload_bytes": 10_000}))
    resp = post(app.test_client(), cat_jpeg)
    assert_error(resp, 413, "payload_too_large")
    assert fact_rows(app)[0]["error_code"] == "payload_too_large"


def test_too_many_files(settings, cat_jpeg):
    app = create_app(settings.model_copy(update={"max_files_per_request": 2}))
    files = [(io.BytesIO(cat_jpeg), f"{i}.jpg") for i in range(3)]
    resp = app.test_client().post(
        "/api/v1/predict", data={"image": files}, content_type="multipart/form-data"
    )
    assert_error(resp, 400, "too_many_files")


def test_a_flood_of_tiny_files_is_too_many_files_not_too_large(client, app):
    # 1,200 files of 16 bytes (a ~200 KB body) ran into werkzeug's MAX_FORM_PARTS, which the
    # API reported as "the request body exceeds the limit of 20,971,520 bytes" (413).
    files = [(io.BytesIO(b"x" * 16), f"{i}.jpg") for i in range(1200)]
    resp = client.post("/api/v1/predict", data={"image": files}, content_type="multipart/form-data")
    error = assert_error(resp, 400, "too_many_files")
    assert "at most 16 per request" in error["message"]
    assert [(r["status_code"], r["error_code"]) for r in fact_rows(app)] == [
        (400, "too_many_files")
    ]


def test_a_form_over_the_part_limit_is_not_called_a_body_over_the_size_limit(client):
    # Parts that are not files stay bounded by MAX_FORM_PARTS; the 413 names that limit.
    fields = {f"field{i}": "x" for i in range(200)}
    resp = client.post("/api/v1/predict", data=fields, content_type="multipart/form-data")
    message = assert_error(resp, 413, "payload_too_large")["message"]
    assert "more than 32 parts" in message and "body exceeds" not in message


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/api/v1/nope"), 404, "not_found")
    assert_error(client.get("/api/v1/predict"), 405, "method_not_allowed")


def test_a_database_that_refuses_writes_gives_503_and_acknowledges_nothing(settings, app, cat_jpeg):
    db_file = settings.data_dir / "imgclass.db"
    read_only = settings.model_copy(
        update={
            "database_url": f"sqlite:///file:{db_file}?mode=ro&uri=true",
            "auto_migrate": False,
            "bootstrap_admin": False,
        }
    )
    resp = post(create_app(read_only).test_client(), cat_jpeg)
    error = assert_error(resp, 503, "storage_unavailable")
    assert "not processed" in error["message"] and resp.headers["Retry-After"]
    assert "results" not in resp.get_json()
    assert fact_rows(app) == []  # nothing was written, so nothing was claimed


def test_an_unreachable_database_is_503_wherever_it_is_met(app, client, admin_key, cat_jpeg):
    """Not only the recorder: the key lookup and the analytics reads meet a database that is
    down too (tests/e2e/test_faults.py restarts a real PostgreSQL under load)."""
    svc = services(app)
    # Nothing listens there: every connection attempt is refused, as while a server restarts.
    down = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/imgclass")
    auth = {"Authorization": f"Bearer {admin_key}"}
    engine, analytics = svc.engine, svc.analytics_engine
    try:
        svc.users.engine = down
        resp = client.post(
            "/api/v1/predict",
            data={"image": (io.BytesIO(cat_jpeg), "cat.jpg")},
            content_type="multipart/form-data",
            headers=auth,
        )
        assert_error(resp, 503, "storage_unavailable")
        assert resp.headers["Retry-After"] and "results" not in resp.get_json()
        svc.users.engine, svc.analytics_engine = engine, down  # the analytics reads' engine
        resp = client.get("/api/v1/analytics/summary", headers=auth)
        assert_error(resp, 503, "storage_unavailable")
        assert resp.headers["Retry-After"]
    finally:
        svc.users.engine, svc.analytics_engine = engine, analytics
        down.dispose()


def test_missing_int8_model_names_its_export_command(settings, tmp_path, cat_jpeg):
    app = create_app(
        settings.model_copy(update={"model_dir": tmp_path / "empty", "model_precision": "int8"})
    )
    error = assert_error(post(app.test_client(), cat_jpeg), 503, "model_unavailable")
    assert "imgclass model export --precision int8" in error["message"]


def test_missing_model_is_503_not_500(settings, cat_jpeg, tmp_path):
    app = create_app(settings.model_copy(update={"model_dir": tmp_path / "empty"}))
    resp = post(app.test_client(), cat_jpeg)
    assert_error(resp, 503, "model_unavailable")
    assert resp.headers["Retry-After"]
    assert fact_rows(app)[0]["status_code"] == 503


@pytest.mark.postgresql
def test_a_request_stuck_on_a_database_lock_is_503_after_the_statement_timeout(
    tmp_path, model_dir, postgres_url, cat_jpeg
):
    """gunicorn never times out a slow request; PostgreSQL's statement_timeout does."""
    from sqlalchemy import text

    from tests.conftest import make_settings

    settings = make_settings(
        tmp_path / "data", model_dir, database_url=postgres_url, db_statement_timeout_s=0.5
    )
    app = create_app(settings)
    locker = make_engine(postgres_url)
    try:
        client = app.test_client()
        assert post(client, cat_jpeg).status_code == 200
        with locker.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE api_event_fact IN ACCESS EXCLUSIVE MODE"))
            # In a thread, so a missing timeout fails the test instead of hanging it: the
            # lock (and with it the stuck request) ends when this block does.
            stuck = ThreadPoolExecutor(1)
            try:
                resp = stuck.submit(post, client, cat_jpeg).result(timeout=20)
            finally:
                stuck.shutdown(wait=False)
            assert_error(resp, 503, "storage_unavailable")
            assert resp.headers["Retry-After"]
        assert post(client, cat_jpeg).status_code == 200  # the lock is gone: healed
    finally:
        locker.dispose()
        services(app).engine.dispose()
