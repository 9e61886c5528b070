"""`/api/v1/admin/backups`: admins take a backup over HTTP and see how old the last one is."""

from __future__ import annotations

import fcntl
import io
import uuid

import pytest
from pydantic import SecretStr

from imgclass.app import create_app, services
from imgclass.warehouse.backup import last_backup_time, restore_backup
from imgclass.warehouse.backup_store import LocalStore
from tests.conftest import fact_count
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


@pytest.mark.postgresql
def test_postgresql_is_501_from_the_backup_process(settings, postgres_url):
    # The backup runs in a child process; its typed errors still reach the client.
    app = create_app(settings.model_copy(update={"database_url": postgres_url}))
    _, key = services(app).users.add(f"ops-{uuid.uuid4().hex[:8]}", admin=True)
    resp = app.test_client().post(URL, headers=bearer(key))
    assert resp.status_code == 501
    error = resp.get_json()["error"]
    assert error["code"] == "backup_unsupported" and "pg_dump" in error["message"]
