"""`/api/v1/admin/backups`: admins take a backup over HTTP and see how old the last one is."""

from __future__ import annotations

import fcntl
import io
import uuid
from datetime import datetime

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from imgclass.app import create_app, services
from imgclass.warehouse.backup import Backups, last_backup_time, restore_backup
from imgclass.warehouse.backup_postgres import BACKUP_LOCK_KEY
from imgclass.warehouse.backup_store import LocalStore
from imgclass.warehouse.db import make_engine
from tests.conftest import fact_count
from tests.support.postgres import temporary_database
from tests.support.s3 import closed_port
from tests.warehouse.test_backup import request_ids

URL = "/api/v1/admin/backups"


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def predict(client, jpeg) -> str:
    resp = client.post(
        "/api/v1/predict",
        data={"image": (io.BytesIO(jpeg), "cat.jpg")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200
    return resp.get_json()["request_id"]


def test_admins_only(app, client, admin_key):
    _, key = services(app).users.add("alice")
    for method in (client.get, client.post):
        assert method(URL).status_code == 401
        resp = method(URL, headers=bearer(key))
        assert resp.status_code == 403
        assert resp.get_json()["error"]["code"] == "forbidden"
    assert not services(app).settings.local_backup_dir.exists()


def test_backup_over_http_then_list_it(app, client, admin_key, cat_jpeg, tmp_path):
    settings = services(app).settings
    listed = client.get(URL, headers=bearer(admin_key)).get_json()
    assert listed["backups"] == [] and listed["last_backup_age_seconds"] is None
    acknowledged = [predict(client, cat_jpeg) for _ in range(2)]

    resp = client.post(URL, headers=bearer(admin_key))
    assert resp.status_code == 201
    manifest = resp.get_json()
    assert manifest["tables"]["api_event_fact"] == fact_count(app) == 2
    assert manifest["file"].startswith(manifest["name"])
    assert (settings.local_backup_dir / manifest["file"]).is_file()
    assert last_backup_time(settings) is not None

    listed = client.get(URL, headers=bearer(admin_key)).get_json()
    assert listed["destination"] == str(settings.local_backup_dir)
    assert [b["name"] for b in listed["backups"]] == [manifest["name"]]
    assert listed["backups"][0]["verification"] is None
    assert listed["last_backup_age_seconds"] >= 0

    # The backup restores to exactly what had been acknowledged.
    restored = tmp_path / "restored.db"
    restore_backup(LocalStore(settings.local_backup_dir), manifest["name"], restored)
    assert request_ids(restored) == acknowledged


def test_a_running_backup_answers_409(app, client, admin_key, settings):
    lock = settings.data_dir / ".imgclass.db.backup-lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        resp = client.post(URL, headers=bearer(admin_key))
    assert resp.status_code == 409
    assert resp.get_json()["error"]["code"] == "backup_in_progress"


def test_an_unreachable_destination_is_503_with_retry_after(settings, admin_key):
    dead = settings.model_copy(
        update={
            "backup_destination": "s3://imgclass-backups/x",
            "s3_endpoint_url": f"http://127.0.0.1:{closed_port()}",
            "s3_access_key_id": "key",
            "s3_secret_access_key": SecretStr("secret"),
        }
    )
    client = create_app(dead).test_client()
    for method in (client.post, client.get):
        resp = method(URL, headers=bearer(admin_key))
        assert resp.status_code == 503
        error = resp.get_json()["error"]
        assert error["code"] == "backup_destination_unavailable"
        assert "cannot reach the S3 endpoint" in error["message"] and error["request_id"]
        assert resp.headers["Retry-After"]


@pytest.fixture
def postgres_app(settings, postgres_url):
    """An app on a PostgreSQL warehouse, and an admin key for it."""
    app = create_app(settings.model_copy(update={"database_url": postgres_url}))
    _, key = services(app).users.add(f"ops-{uuid.uuid4().hex[:8]}", admin=True)
    yield app, key
    services(app).engine.dispose()


@pytest.mark.postgresql
def test_backup_over_http_on_postgresql(postgres_app, settings, cat_jpeg, tmp_path):
    # The backup runs pg_dump in a child process; the worker only waits for the manifest.
    app, key = postgres_app
    client = app.test_client()
    acknowledged = [predict(client, cat_jpeg) for _ in range(2)]
    resp = client.post(URL, headers=bearer(key))
    assert resp.status_code == 201, resp.get_json()
    manifest = resp.get_json()
    assert manifest["backend"] == "postgresql" and manifest["file"].endswith(".pgdump.zst")
    assert manifest["tables"]["api_event_fact"] == fact_count(app) == 2
    listed = client.get(URL, headers=bearer(key)).get_json()
    assert [(b["name"], b["backend"]) for b in listed["backups"]] == [
        (manifest["name"], "postgresql")
    ]
    assert listed["last_backup_age_seconds"] >= 0

    # Another replica, with a data dir of its own, knows the backup too (from the database).
    url = services(app).settings.database_url
    replica = create_app(
        settings.model_copy(update={"database_url": url, "data_dir": tmp_path / "replica"})
    )
    try:
        other = replica.test_client()
        assert other.get(URL, headers=bearer(key)).get_json()["last_backup_age_seconds"] >= 0
        scraped = other.get("/metrics").get_data(as_text=True)
    finally:
        services(replica).engine.dispose()
    (line,) = [
        line
        for line in scraped.splitlines()
        if line.startswith("imgclass_backup_last_success_timestamp_seconds ")
    ]
    created = datetime.fromisoformat(manifest["created_at"]).timestamp()
    assert float(line.split()[1]) == pytest.approx(created, abs=1e-3)

    # The backup restores to exactly what had been acknowledged.
    services(app).engine.dispose()
    with temporary_database() as restored:
        Backups(services(app).settings.model_copy(update={"database_url": restored})).restore(
            manifest["name"]
        )
        engine = make_engine(restored)
        with engine.connect() as conn:
            ids = conn.execute(text("SELECT request_id FROM api_event_fact ORDER BY event_id"))
            assert list(ids.scalars()) == acknowledged
        engine.dispose()


@pytest.mark.postgresql
def test_a_running_postgresql_backup_answers_409(postgres_app):
    app, key = postgres_app
    with services(app).engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": BACKUP_LOCK_KEY})
        resp = app.test_client().post(URL, headers=bearer(key))
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": BACKUP_LOCK_KEY})
    assert resp.status_code == 409
    assert resp.get_json()["error"]["code"] == "backup_in_progress"
