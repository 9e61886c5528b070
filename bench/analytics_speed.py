"""Analytics at scale: seed N events into a temporary SQLite warehouse, then time
recording one more event, a 30-day day x class roll-up and the dashboard summary.

    python -m bench.analytics_speed [--events 1000000] [--days 30] [--repeat 5] [--keep PATH]
    python -m bench.analytics_speed --postgresql   # the same on a temporary PostgreSQL database

The warehouse has the service's settings (WAL, synchronous=FULL) and schema (all
migrations). Events come from ``imgclass demo seed``'s generator (``record_batch``).
Query times are the median of ``--repeat`` warm runs; the query plans SQLite chose
(EXPLAIN QUERY PLAN) are printed too. Results go to docs/PERFORMANCE.md by hand.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

from imgclass.vision.labels import imagenet_labels
from imgclass.warehouse import analytics
from imgclass.warehouse.cube import Cube, CubeQuery
from imgclass.warehouse.db import make_engine
from imgclass.warehouse.demo import generate, seed_demo
from imgclass.warehouse.migrate import upgrade
from imgclass.warehouse.recorder import ClassFacts, Recorder, utc_now


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def plan(engine, stmt) -> list[str]:
    compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
    explain = "EXPLAIN QUERY PLAN" if engine.dialect.name == "sqlite" else "EXPLAIN"
    with engine.connect() as conn:
        return [row[-1] for row in conn.execute(text(f"{explain} {compiled}"))]


@contextmanager
def postgresql_database(server: str):
    """A new database on ``server`` (a SQLAlchemy URL without the database), dropped after."""
    name = f"imgclass_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def record_cost(engine, events) -> float:
    """ms per event of Recorder.record, one event per transaction (after 50 to warm up)."""
    recorder = Recorder(engine)
    for event in events[:50]:
        recorder.record([event])
    started = time.perf_counter()
    for event in events[50:]:
        recorder.record([event])
    return (time.perf_counter() - started) * 1000 / (len(events) - 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--single", type=int, default=2000, help="events recorded one by one")
    parser.add_argument("--keep", type=Path, help="use (or create) this SQLite file")
    parser.add_argument(
        "--record-seed",
        type=int,
        default=99,
        help="seed of the events recorded one by one; change it when re-running on a kept file, "
        "or their images are no longer new",
    )
    parser.add_argument(
        "--postgresql",
        nargs="?",
        const="postgresql+psycopg://postgres@127.0.0.1:5432",
        help="use a temporary database on this PostgreSQL server instead of SQLite",
    )
    args = parser.parse_args()
    if args.postgresql:
        with postgresql_database(args.postgresql) as url:
            run(args, url, fresh=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "warehouse.db"
        run(args, f"sqlite:///{path}", fresh=not path.exists())
        print(f"database file: {path.stat().st_size / 1e6:.0f} MB")


def run(args, url: str, fresh: bool) -> None:
    labels = imagenet_labels()
    classes = [ClassFacts(i, labels.names[i], labels.wnids[i]) for i in range(len(labels))]
    engine = make_engine(url)
    upgrade(engine)
    now = utc_now()
    if fresh:
        started = time.perf_counter()
        seeded = seed_demo(
            engine, events=args.events, days=args.days, classes=classes, now=now, seed=1
        )
        seconds = time.perf_counter() - started
        print(
            f"seeded {seeded.events:,} events over {args.days} days in {seconds:.0f} s "
            f"({seconds * 1e6 / seeded.events:.0f} µs/event, record_batch of 5000)"
        )
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()

    # One event per transaction, as the service records them: a new image each time.
    # The same on an empty warehouse right after, so a busy machine shows in both figures.
    single, _ = generate(args.single + 50, 1, classes, now, seed=args.record_seed)
    single = [replace(e, request_id=f"single-{args.record_seed}-{i}") for i, e in enumerate(single)]
    full = record_cost(engine, single)
    with tempfile.TemporaryDirectory() as tmp:
        empty = make_engine(f"sqlite:///{Path(tmp) / 'empty.db'}")
        upgrade(empty)
        baseline = record_cost(empty, single)
        empty.dispose()
    print(
        f"record(): {full:.3f} ms/event into this warehouse, {baseline:.3f} ms/event into an "
        f"empty SQLite one (one event per transaction, {args.single:,} events, new image each)"
    )

    cube = Cube(engine)
    # The last 30 whole UTC days, today included: what from=<date>&to=<today> asks for.
    midnight = datetime(now.year, now.month, now.day)
    month = {"time_from": midnight - timedelta(days=29), "time_to": midnight + timedelta(days=1)}
    rollups = {
        "day x class: requests, avg_time_ms": ("requests", "avg_time_ms"),
        "day x class: requests, avg_time_ms, p95_time_ms": (
            "requests",
            "avg_time_ms",
            "p95_time_ms",
        ),
    }
    for name, measures in rollups.items():
        query = CubeQuery(group_by=("day", "class"), measures=measures, limit=100_000, **month)
        ms, result = timed(lambda q=query: cube.run(q), args.repeat)
        print(f"roll-up {name}: {ms:.0f} ms ({len(result.rows):,} rows)")
        for line in plan(engine, cube.statement(query, query.group_by, (), None)[0]):
            print(f"    {line}")
    today = now.date()
    summaries = {"summary, all time": {}, "summary, user=alice": {"user": "alice"}}
    for label, params in summaries.items():
        ms, body = timed(lambda p=params: analytics.summary(engine, p, today), args.repeat)
        print(f"{label}: {ms:.0f} ms (requests {body['totals']['requests']:,})")
    # What else the dashboard asks for (not targets; to see that it stays usable).
    others = {
        "timeseries grain=hour, requests": (analytics.timeseries, {"grain": "hour"}),
        "timeseries grain=hour, requests,p50,p95,p99": (
            analytics.timeseries,
            {"grain": "hour", "measures": "requests,p50_time_ms,p95_time_ms,p99_time_ms"},
        ),
        "timeseries grain=day, requests,errors": (
            analytics.timeseries,
            {"grain": "day", "measures": "requests,errors"},
        ),
        "concepts (top level)": (analytics.concept_children, {}),
        "concepts parent=dog": (analytics.concept_children, {"parent": "dog"}),
        "concepts parent=animal, user=alice": (
            analytics.concept_children,
            {"parent": "animal", "user": "alice"},
        ),
        "events limit=50": (analytics.latest_events, {}),
        "events limit=50, class=tabby": (analytics.latest_events, {"class": "tabby"}),
    }
    for label, (fn, params) in others.items():
        ms, _ = timed(lambda f=fn, p=params: f(engine, p), args.repeat)
        print(f"{label}: {ms:.0f} ms")
    if engine.dialect.name == "sqlite":
        compare_percentile_methods(engine)
    engine.dispose()


WINDOW_P95 = """
SELECT d, c, SUM(CASE WHEN rn = lo THEN t * (1 - w) WHEN rn = lo + 1 THEN t * w ELSE 0 END)
FROM (SELECT timestamp_key / 10000 AS d, class_key AS c, time_taken AS t,
             ROW_NUMBER() OVER win AS rn,
             ((COUNT(*) OVER part) - 1) * 95 / 100 + 1 AS lo,
             (((COUNT(*) OVER part) - 1) * 95 % 100) / 100.0 AS w
      FROM api_event_fact
      WINDOW part AS (PARTITION BY timestamp_key / 10000, class_key),
             win AS (part ORDER BY time_taken))
GROUP BY d, c
"""
AGGREGATE_P95 = """
SELECT timestamp_key / 10000 AS d, class_key AS c, imgclass_percentile(time_taken, 0.95)
FROM api_event_fact GROUP BY d, c
"""


def compare_percentile_methods(engine) -> None:
    """p95 by day and class over every fact: window functions vs the registered aggregate."""
    found = {}
    with engine.connect() as conn:
        for name, sql in [("window", WINDOW_P95), ("aggregate", AGGREGATE_P95)] * 2:
            started = time.perf_counter()
            rows = conn.execute(text(sql)).all()
            ms = (time.perf_counter() - started) * 1000
            found[name] = {(d, c): v for d, c, v in rows}
            print(f"p95 by day x class over all facts, {name}: {ms:.0f} ms ({len(rows):,} groups)")
    same = found["window"].keys() == found["aggregate"].keys() and all(
        abs(found["window"][k] - v) <= 1e-9 * max(1.0, abs(v))
        for k, v in found["aggregate"].items()
    )
    print(f"window and aggregate agree: {same}")


if __name__ == "__main__":
    main()
