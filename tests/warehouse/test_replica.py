"""Analytics reads from a real streaming replica: the same answers, and no writes there."""

from __future__ import annotations

import io
from collections import Counter
from datetime import datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from imgclass.app import create_app, services
from imgclass.warehouse.health import check_writable
from imgclass.warehouse.recorder import Event, Recorder, Requester
from imgclass.warehouse.summary import requests_per_class
from tests.conftest import make_settings
from tests.support.pgcluster import primary_and_replica, wait_for_replay

READ_ONLY_TRANSACTION = "25006"  # SQLSTATE read_only_sql_transaction


def post(client, files):
    data = {"image": [(io.BytesIO(content), name) for name, content in files]}
    return client.post("/api/v1/predict", data=data, content_type="multipart/form-data")


def test_the_analytics_engine_is_the_primary_by_default(app):
    assert services(app).analytics_engine is services(app).engine


@pytest.mark.postgresql
def test_analytics_reads_come_from_a_streaming_replica(tmp_path, model_dir, cat_jpeg, coffee_jpeg):
    with primary_and_replica() as (primary, replica):
        with primary.connect() as conn:
            conn.execute("CREATE DATABASE imgclass")
        settings = make_settings(
            tmp_path / "data",
            model_dir,
            database_url=primary.url("imgclass"),
            analytics_database_url=replica.url("imgclass"),
        )
        app = create_app(settings)  # migrates the primary; the replica follows
        svc = services(app)
        try:
            assert svc.analytics_engine is not svc.engine
            assert svc.analytics_engine.url.port == replica.port

            client = app.test_client()
            answered = Counter()
            for files in (
                [("cat.jpg", cat_jpeg)],
                [("cup.jpg", coffee_jpeg), ("cat-2.jpg", cat_jpeg)],
                [("cup-2.jpg", coffee_jpeg)],
            ):
                resp = post(client, files)
                assert resp.status_code == 200
                for result in resp.get_json()["results"]:
                    answered[result["predictions"][0]["class_id"]] += 1
            assert post(client, [("empty.jpg", b"")]).status_code == 400  # not a class

            wait_for_replay(primary, replica)
            on_replica = requests_per_class(svc.analytics_engine)
            assert on_replica == requests_per_class(svc.engine)
            assert {c.class_id: c.requests for c in on_replica} == dict(answered)

            with svc.analytics_engine.connect() as conn:
                assert conn.execute(text("SELECT pg_is_in_recovery()")).scalar_one() is True
            # The replica refuses writes, whichever way they come.
            event = Event(
                "on-replica",
                datetime(2026, 11, 25, 12, 0),
                Requester(0, "anonymous", "127.0.0.1", "pytest"),
                "predict",
                400,
                1.0,
                error_code="empty_file",
            )
            for write in (
                lambda: Recorder(svc.analytics_engine).record([event]),
                lambda: check_writable(svc.analytics_engine),
            ):
                with pytest.raises(DBAPIError) as refused:
                    write()
                assert refused.value.orig.sqlstate == READ_ONLY_TRANSACTION
        finally:
            svc.engine.dispose()
            svc.analytics_engine.dispose()
