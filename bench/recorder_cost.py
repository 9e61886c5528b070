"""Warehouse write cost per event: `Recorder.record` of one event at a time.

Alone: one thread, one event per transaction. Fresh users/images each time for "cold"
(every dimension inserted), repeats for "warm" (dimension keys cached). SQLite with the
service's settings (WAL, synchronous=FULL), and NORMAL to show what the fsync costs.

Concurrent: what the served path sees, `--processes` processes (gunicorn workers) of
`--threads` threads each, every thread recording one request's event after another into
one warehouse, with group commit off (a transaction per request) and on, alternating.

    python -m bench.recorder_cost [--events 2000] [--concurrent --processes 2 --threads 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import threading
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


def _record_for(url: str, group_commit: bool, threads: int, seconds: float, start, out) -> None:
    """One worker process: ``threads`` threads recording for ``seconds``; puts (events, cpu s)."""
    recorder = Recorder(make_engine(url), group_commit=group_commit)
    recorder.record([make_event(0, cold=False)])  # connect, warm the key cache
    counts = [0] * threads
    deadline: list[float] = []

    def loop(slot: int) -> None:
        i = slot
        while time.perf_counter() < deadline[0]:
            recorder.record([make_event(i, cold=False)])
            counts[slot] += 1
            i += threads

    start.wait()
    cpu = os.times()
    deadline.append(time.perf_counter() + seconds)
    workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    used = os.times()
    out.put((sum(counts), used.user + used.system - cpu.user - cpu.system))


def concurrent_rate(processes: int, threads: int, seconds: float, group_commit: bool) -> tuple:
    """(events/s, CPU ms per event) of ``processes`` x ``threads`` recorders on one file."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'w.db'}"
        upgrade(make_engine(url))
        start, out = ctx.Barrier(processes), ctx.Queue()
        procs = [
            ctx.Process(target=_record_for, args=(url, group_commit, threads, seconds, start, out))
            for _ in range(processes)
        ]
        for p in procs:
            p.start()
        results = [out.get() for _ in procs]
        for p in procs:
            p.join()
    events = sum(n for n, _ in results)
    return events / seconds, sum(cpu for _, cpu in results) * 1000 / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrent", action="store_true")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.concurrent:
        shape = f"{args.processes} processes x {args.threads} threads"
        for _ in range(args.rounds):
            for group_commit in (False, True):
                rate, cpu_ms = concurrent_rate(
                    args.processes, args.threads, args.seconds, group_commit
                )
                mode = "group commit" if group_commit else "one transaction per request"
                print(f"{shape}, {mode:<27}: {rate:7.0f} events/s, {cpu_ms:.3f} CPU ms/event")
        return
    for synchronous in ("FULL", "NORMAL"):
        for cold in (False, True):
            ms = per_event_ms(args.events, cold, synchronous)
            kind = "new dimensions" if cold else "cached dimensions"
            print(f"synchronous={synchronous:<6} {kind:<18}: {ms:.3f} ms/event")


if __name__ == "__main__":
    main()
