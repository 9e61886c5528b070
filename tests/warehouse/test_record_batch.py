"""Recorder.record_batch writes the same rows as Recorder.record, with their ids."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import upgrade
from imgclass.warehouse.recorder import Recorder
from imgclass.warehouse.schema import (
    AGGREGATES,
    api_event_fact,
    class_dim,
    image_dim,
    user_dim,
)
from tests.warehouse.cube_data import make_events


def snapshot(engine) -> list[tuple]:
    query = (
        select(
            api_event_fact.c.event_id,
            api_event_fact.c.request_id,
            api_event_fact.c.timestamp_key,
            api_event_fact.c.time_taken,
            api_event_fact.c.status_code,
            api_event_fact.c.error_code,
            api_event_fact.c.cache_hit,
            user_dim.c.username,
            user_dim.c.ip_address,
            image_dim.c.image_id,
            image_dim.c.image_filename,
            image_dim.c.format,
            class_dim.c.label,
        )
        .join(user_dim, user_dim.c.user_key == api_event_fact.c.user_key)
        .join(image_dim, image_dim.c.image_key == api_event_fact.c.image_key)
        .join(class_dim, class_dim.c.class_key == api_event_fact.c.class_key)
        .order_by(api_event_fact.c.event_id)
    )
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def test_record_batch_matches_record(tmp_path):
    events = [row.event for row in make_events(150, seed=5)]
    one, many = (make_engine(f"sqlite:///{tmp_path / name}") for name in ("one.db", "many.db"))
    for engine in (one, many):
        upgrade(engine)
    for event in events:
        Recorder(one).record([event])
    recorder = Recorder(many)
    ids = recorder.record_batch(events[:100]) + recorder.record_batch(events[100:])
    assert ids == list(range(1, 151))
    assert snapshot(many) == snapshot(one)
    # Repeated images reuse their row, as record() does: the same image_dim in both.
    images = select(image_dim.c.image_key, image_dim.c.image_id, image_dim.c.image_filename)
    with one.connect() as a, many.connect() as b:
        assert a.execute(images).all() == b.execute(images).all()
    # And the same daily aggregates, built 100 and 50 facts at a time instead of one by one.
    for table in AGGREGATES:
        with one.connect() as a, many.connect() as b:
            ordered = select(table).order_by(*table.primary_key.columns)
            want, got = a.execute(ordered).all(), b.execute(ordered).all()
        assert len(got) == len(want) > 0
        for x, y in zip(got, want, strict=True):
            assert [v for v in x if not isinstance(v, float)] == [
                v for v in y if not isinstance(v, float)
            ]
            assert [v for v in x if isinstance(v, float)] == pytest.approx(
                [v for v in y if isinstance(v, float)], rel=1e-12
            )
    assert recorder.record_batch([]) == []
