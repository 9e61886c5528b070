"""The recorder: facts land with reused dimensions, even with several writer processes.

Every test runs on SQLite and on PostgreSQL (``backends``).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import replace
from datetime import datetime

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, text

from imgclass.warehouse.db import WRITE, make_engine
from imgclass.warehouse.recorder import (
    ClassFacts,
    Event,
    ImageFacts,
    ModelFacts,
    Recorder,
    Requester,
    timestamp_key,
)
from imgclass.warehouse.schema import api_event_fact, class_dim, image_dim, time_dim, user_dim

pytestmark = pytest.mark.backends

ALICE = Requester(7, "alice", "10.0.0.1", "curl/8")
MODEL = ModelFacts("efficientnet-lite0", "0.1.0+fp32", "ab" * 32)


def event(
    request_id: str, *, when=datetime(2026, 11, 25, 14, 32, 10), class_id=281, sha="aa" * 32
) -> Event:
    return Event(
        request_id=request_id,
        event_time=when,
        requester=ALICE,
        endpoint="predict",
        status_code=200,
        time_taken_ms=12.5,
        image=ImageFacts(sha, "cat.jpg", 1000, 451, 300, "JPEG"),
        predicted=ClassFacts(class_id, "tabby, tabby cat", "n02123045"),
        model=MODEL,
        confidence=0.9,
    )


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_time_dimension_attributes(db_engine):
    engine = db_engine
    Recorder(engine).record([event("r1", when=datetime(2026, 11, 29, 23, 59, 59))])
    with engine.connect() as conn:
        row = conn.execute(select(time_dim)).one()._mapping
    assert row["timestamp_key"] == 202611292359 == timestamp_key(datetime(2026, 11, 29, 23, 59))
    assert (row["hour"], row["minute"], row["weekday"], row["week"]) == (23, 59, 7, 48)
    assert (row["month"], row["quarter"], row["year"]) == (11, 4, 2026)


def test_dimensions_are_reused(db_engine):
    engine = db_engine
    recorder = Recorder(engine)
    recorder.record([event("r1"), event("r1")])
    Recorder(engine).record([event("r2")])  # a second process's recorder: empty cache
    assert count(engine, api_event_fact) == 3
    assert count(engine, user_dim) == 1
    assert count(engine, image_dim) == 2  # the "none" member + cat.jpg
    assert count(engine, class_dim) == 2
    assert count(engine, time_dim) == 1


def test_a_failed_transaction_leaves_nothing_and_no_stale_cache(db_engine):
    engine = db_engine
    recorder = Recorder(engine)
    broken = event("r1", class_id=5)
    broken = Event(**{**broken.__dict__, "status_code": None})  # violates NOT NULL
    try:
        recorder.record([event("r0", class_id=5), broken])
    except Exception:
        pass
    else:
        raise AssertionError("the broken event should have failed the transaction")
    assert count(engine, api_event_fact) == 0 and count(engine, class_dim) == 1
    recorder.record([event("r2", class_id=5)])  # the cache must not hold the rolled-back key
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT c.class_id FROM api_event_fact f JOIN class_dim c USING (class_key)")
            ).scalar_one()
            == 5
        )


def _writer(url: str, worker: int, n: int, start) -> None:
    recorder = Recorder(make_engine(url))
    start.wait()  # every process begins at once, so they race for the same new members
    for i in range(n):
        # Step i creates images 2i and 2i+1 and class i: the same new members in every process
        # at about the same moment. Half the writers list the images in the opposite order,
        # which would deadlock two transactions that insert them in list order. (One minute for
        # all: a new time member per step would queue the writers before they reach the images.)
        first, second = f"{2 * i:064x}", f"{2 * i + 1:064x}"
        if worker % 2:
            first, second = second, first
        when = datetime(2026, 11, 25, 14, 0, i)
        recorder.record(
            [
                event(f"w{worker}-{i}-a", when=when, class_id=1000 + i, sha=first),
                event(f"w{worker}-{i}-b", when=when, class_id=1000 + i, sha=second),
            ]
        )


def test_concurrent_processes_lose_nothing_and_duplicate_no_dimension(database_url, db_engine):
    # On PostgreSQL this fails with a plain INSERT (unique violations: two transactions both
    # miss the SELECT) or without the global creation order (deadlocks).
    engine, writers, steps = db_engine, 4, 30
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(writers)
    procs = [
        ctx.Process(target=_writer, args=(database_url, w, steps, start)) for w in range(writers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * writers
    assert count(engine, api_event_fact) == writers * steps * 2
    with engine.connect() as conn:
        ids = conn.execute(
            select(func.count(func.distinct(api_event_fact.c.request_id)))
        ).scalar_one()
    assert ids == writers * steps * 2
    assert count(engine, user_dim) == 1
    assert count(engine, image_dim) == 1 + 2 * steps
    assert count(engine, class_dim) == 1 + steps
    assert count(engine, time_dim) == 1


def test_the_key_cache_is_bounded_and_an_evicted_key_is_found_again(db_engine):
    # Every address and user agent is a user member, and every minute a time member: a
    # long-running worker meets them without end, so the per-process cache must not keep all.
    recorder = Recorder(db_engine, cache_entries=20)
    visitors = [Requester(0, "anonymous", f"10.0.0.{i}", f"client/{i}") for i in range(60)]
    for i, who in enumerate(visitors):
        recorder.record(
            [replace(event(f"v{i}", when=datetime(2026, 11, 25, 14, i)), requester=who)]
        )
        assert recorder.cached_keys <= 20
    # The first visitor's key was evicted long ago: found again, not inserted twice.
    recorder.record([replace(event("again"), requester=visitors[0])])
    assert count(db_engine, user_dim) == 60
    with db_engine.connect() as conn:
        keys = conn.execute(
            text("SELECT user_key FROM api_event_fact WHERE request_id IN ('v0', 'again')")
        ).scalars()
        assert len(set(keys)) == 1


def _record_together(engine, recorder: Recorder, batches: list[list[Event]]) -> dict:
    """Record each batch from its own thread while another transaction holds the write lock,
    so that they all queue, then let them go; returns request id → exception or None."""
    outcome: dict[str, BaseException | None] = {}

    def one(events):
        try:
            recorder.record(events)
            outcome[events[0].request_id] = None
        except Exception as exc:
            outcome[events[0].request_id] = exc

    threads = [threading.Thread(target=one, args=(b,)) for b in batches]
    with engine.connect() as blocker:
        blocker.execution_options(**WRITE)  # BEGIN IMMEDIATE on SQLite
        with blocker.begin():
            if engine.dialect.name == "postgresql":
                blocker.execute(text("LOCK TABLE api_event_fact IN EXCLUSIVE MODE"))
            for t in threads:
                t.start()
            time.sleep(1.0)  # every thread is now waiting: one for the lock, the rest in line
    for t in threads:
        t.join(60)
    return outcome


@pytest.mark.parametrize("group_commit", [True, False], ids=["group", "one-by-one"])
def test_requests_recorded_together_share_a_commit(db_engine, group_commit):
    recorder = Recorder(db_engine, group_commit=group_commit)
    recorder.record([event("warm-up")])
    commits = []
    sa_event.listen(db_engine, "commit", lambda _conn: commits.append(1))
    requests = [[event(f"g{i}", sha=f"{i:064x}")] for i in range(12)]
    outcome = _record_together(db_engine, recorder, requests)
    assert outcome == {f"g{i}": None for i in range(12)}
    assert count(db_engine, api_event_fact) == 13
    recorded = len(commits) - 1  # the lock holder's own transaction commits too
    # With group commit: the one that got the lock first, then everyone else in one
    # transaction; without: one commit each.
    assert recorded <= 2 if group_commit else recorded == 12


def test_a_request_that_fails_in_a_shared_commit_fails_alone(db_engine):
    recorder = Recorder(db_engine)
    broken = replace(event("broken", sha="bb" * 32), status_code=None)  # violates NOT NULL
    requests = [[event(f"ok{i}", sha=f"{i:064x}")] for i in range(5)]
    requests.insert(2, [broken])
    outcome = _record_together(db_engine, recorder, requests)
    assert outcome.pop("broken") is not None
    assert outcome == {f"ok{i}": None for i in range(5)}
    with db_engine.connect() as conn:
        stored = set(conn.execute(select(api_event_fact.c.request_id)).scalars())
    assert stored == {f"ok{i}" for i in range(5)}
