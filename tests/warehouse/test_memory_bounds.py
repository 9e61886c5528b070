"""The two caches a worker fills as it serves are sized by settings (docs/RELIABILITY.md, soak)."""

from __future__ import annotations

import io

from sqlalchemy import text

from imgclass.app import create_app, services
from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import upgrade
from imgclass.warehouse.recorder import Recorder
from tests.conftest import make_settings
from tests.warehouse.test_recorder import event


def test_sqlite_page_cache_is_the_configured_size(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}", sqlite_cache_kib=256)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA cache_size")).scalar_one() == -256
    default = make_engine(f"sqlite:///{tmp_path / 'd.db'}")
    with default.connect() as conn:
        assert conn.execute(text("PRAGMA cache_size")).scalar_one() == -2048


def test_the_servers_caches_follow_the_settings(tmp_path, model_dir, cat_jpeg):
    settings = make_settings(
        tmp_path / "data", model_dir, sqlite_cache_kib=128, dimension_cache_entries=5
    )
    app = create_app(settings)
    client = app.test_client()
    for i in range(12):  # twelve clients: twelve user keys, more than the cache keeps
        resp = client.post(
            "/api/v1/predict",
            data={"image": (io.BytesIO(cat_jpeg), "cat.jpg")},
            content_type="multipart/form-data",
            headers={"User-Agent": f"client/{i}"},
        )
        assert resp.status_code == 200
    assert services(app).predictor.recorder.cached_keys <= 5
    with services(app).engine.connect() as conn:
        assert conn.execute(text("PRAGMA cache_size")).scalar_one() == -128


def test_a_dimension_cache_of_zero_entries_records_without_caching(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    upgrade(engine)
    recorder = Recorder(engine, cache_entries=0)
    recorder.record([event("r0"), event("r1")])
    recorder.record([event("r2")])  # the same dimensions again: looked up, not cached
    assert recorder.cached_keys == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM api_event_fact")).scalar_one() == 3
