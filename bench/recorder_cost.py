"""Warehouse write cost per event: `Recorder.record` of one event per transaction.

Fresh users/images each time for "cold" (every dimension inserted), repeats for
"warm" (dimension keys cached). SQLite with the service's settings
(WAL, synchronous=FULL); `--synchronous NORMAL` shows what the fsync costs.

    python -m bench.recorder_cost [--events 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sqlalchemy import event as sa_event

from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import upgrade
from imgclass.warehouse.recorder import (
    ClassFacts,
    Event,
    ImageFacts,
    ModelFacts,
    Recorder,
    Requester,
    utc_now,
)

MODEL = ModelFacts("efficientnet-lite0", "0.1.0+fp32", "ab" * 32)


def make_event(i: int, cold: bool) -> Event:
    key = i if cold else i % 10
    return Event(
        request_id=f"r{i}",
        event_time=utc_now(),
        requester=Requester(key, f"user{key}", f"10.0.{key // 250}.{key % 250}", "bench/1"),
        endpoint="predict",
        status_code=200,
        time_taken_ms=10.0,
        image=ImageFacts(f"{key:064x}", f"{key}.jpg", 50_000, 640, 480, "JPEG"),
        predicted=ClassFacts(key % 1000, f"class {key % 1000}"),
        model=MODEL,
        confidence=0.5,
    )


def per_event_ms(events: int, cold: bool, synchronous: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'w.db'}")
        upgrade(engine)
        if synchronous != "FULL":

            @sa_event.listens_for(engine, "connect")
            def _sync(dbapi_connection, _record):
                dbapi_connection.execute(f"PRAGMA synchronous={synchronous}")

            engine.dispose()
        recorder = Recorder(engine)
        for i in range(50):  # warm-up
            recorder.record([make_event(i, cold=False)])
        started = time.perf_counter()
        for i in range(events):
            recorder.record([make_event(1000 + i, cold)])
        return (time.perf_counter() - started) * 1000 / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    for synchronous in ("FULL", "NORMAL"):
        for cold in (False, True):
            ms = per_event_ms(args.events, cold, synchronous)
            kind = "new dimensions" if cold else "cached dimensions"
            print(f"synchronous={synchronous:<6} {kind:<18}: {ms:.3f} ms/event")


if __name__ == "__main__":
    main()
