"""Feedback upserts, accuracy and drift windows on a real PostgreSQL, not only SQLite."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from imgclass.warehouse.db import make_engine
from imgclass.warehouse.drift_data import recent_window, reference_window
from imgclass.warehouse.feedback import FeedbackStore, accuracy, request_events
from imgclass.warehouse.migrate import upgrade
from imgclass.warehouse.recorder import (
    ClassFacts,
    Event,
    ImageFacts,
    ModelFacts,
    Recorder,
    Requester,
)
from imgclass.warehouse.schema import class_dim, prediction_feedback
from tests.support.postgres import temporary_database

WHEN = datetime(2026, 11, 20, 9, 30)
WHO = Requester(0, "anonymous", "10.0.0.9", "pytest")
MODEL = ModelFacts("efficientnet-lite0", "0.1.0+fp32", "cd" * 32)
TABBY = ClassFacts(281, "tabby, tabby cat", "n02123045")
GOLDFISH = ClassFacts(1, "goldfish, Carassius auratus", "n01443537")


def event(i: int, request_id: str, cls: ClassFacts) -> Event:
    return Event(
        request_id=request_id,
        event_time=WHEN + timedelta(minutes=i),
        requester=WHO,
        endpoint="predict",
        status_code=200,
        time_taken_ms=9.0,
        image=ImageFacts(f"{i:064x}", f"img{i}.jpg", 2000, 400 + i, 300, "PNG", 90.0 + i),
        predicted=cls,
        model=MODEL,
        confidence=0.8,
    )


@pytest.fixture
def engine():
    with temporary_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        yield engine
        engine.dispose()


def test_feedback_upsert_and_accuracy_on_postgresql(engine):
    Recorder(engine).record([event(0, "req-a", TABBY), event(1, "req-a", TABBY)])
    Recorder(engine).record([event(2, "req-b", TABBY)])
    first, second = request_events(engine, "req-a", owner=0)
    assert (first.filename, second.filename, first.class_id) == ("img0.jpg", "img1.jpg", 281)

    store = FeedbackStore(engine)
    stored = store.record(first, GOLDFISH, user_id=0)
    assert (stored.is_correct, stored.replaced) == (False, False)
    replaced = store.record(first, TABBY, user_id=3)  # ON CONFLICT (event_id) DO UPDATE
    assert (replaced.is_correct, replaced.replaced) == (True, True)
    store.record(second, GOLDFISH, user_id=0)
    (only_b,) = request_events(engine, "req-b", owner=None)
    store.record(only_b, TABBY, user_id=0)

    with engine.connect() as conn:
        rows = conn.execute(
            select(prediction_feedback.c.event_id, prediction_feedback.c.user_id).order_by(
                prediction_feedback.c.event_id
            )
        ).all()
        goldfish = conn.execute(select(class_dim.c.wnid).where(class_dim.c.class_id == 1)).one()
        assert conn.execute(select(func.count()).select_from(class_dim)).scalar_one() == 3
    assert [r.user_id for r in rows] == [3, 0, 0]
    assert goldfish.wnid == "n01443537"

    (overall,) = accuracy(engine)
    assert (overall.feedback, overall.correct) == (3, 2)
    assert {r.key: r.correct for r in accuracy(engine, "true_class")} == {1: 0, 281: 2}
    (day,) = accuracy(engine, "day")
    assert day.label == "2026-11-20"


def test_drift_windows_on_postgresql(engine):
    Recorder(engine).record([event(i, f"req-{i}", TABBY) for i in range(30)])
    reference = reference_window(engine, first_events=10)
    recent = recent_window(engine, last_events=5, after_event_id=reference.last_event_id)
    assert reference.widths == list(range(400, 410))
    assert sorted(recent.widths) == [425, 426, 427, 428, 429]
    ranged = reference_window(
        engine, start=WHEN + timedelta(minutes=5), end=WHEN + timedelta(minutes=8)
    )
    assert sorted(ranged.widths) == [405, 406, 407]
    minutes = recent_window(engine, minutes=3, now=WHEN + timedelta(minutes=29, seconds=1))
    assert sorted(minutes.widths) == [427, 428, 429]
