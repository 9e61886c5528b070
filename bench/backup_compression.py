"""Backup costs on a synthetic warehouse: snapshot method and compression format.

Fills a warehouse with N events through the Recorder (varied users, images, classes,
failures), then measures:

* the snapshot: SQLite's backup API (what imgclass uses) against ``VACUUM INTO``;
* the compression: zstd level 3 (the default) against gzip level 6, through the same
  streaming code the backups use (size, compress and decompress throughput).

Times are CPU seconds of this process (everything here runs in it, on one thread), so
other load on the machine disturbs them less than it would wall-clock times.

    python -m bench.backup_compression [--events 200000]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import sqlite3
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from imgclass.warehouse.backup import snapshot_database
from imgclass.warehouse.backup_codec import compress, decompress
from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import upgrade
from imgclass.warehouse.recorder import (
    ClassFacts,
    Event,
    ImageFacts,
    ModelFacts,
    Recorder,
    Requester,
)

AGENTS = ["curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0", "python-requests/2.32"]


def fill(engine, events: int) -> None:
    rnd = random.Random(1)
    start = datetime(2026, 11, 1)
    models = [
        ModelFacts("efficientnet-lite0", v, hashlib.sha256(v.encode()).hexdigest())
        for v in ("0.1.0+fp32", "0.1.0+int8")
    ]
    recorder, batch = Recorder(engine), []
    for i in range(events):
        user, image, cls = rnd.randrange(500), rnd.randrange(events // 2 + 1), rnd.randrange(1000)
        ok = rnd.random() > 0.03
        batch.append(
            Event(
                request_id=hashlib.md5(str(i).encode()).hexdigest(),
                event_time=start + timedelta(seconds=3 * i),
                requester=Requester(
                    user % 50,
                    f"user{user % 50}",
                    f"10.0.{user % 7}.{user % 250}",
                    rnd.choice(AGENTS),
                ),
                endpoint="predict",
                status_code=200 if ok else 422,
                time_taken_ms=rnd.uniform(5, 80),
                image=ImageFacts(
                    hashlib.sha256(str(image).encode()).hexdigest(),
                    f"IMG_{image:05d}.jpg",
                    rnd.randrange(20_000, 4_000_000),
                    rnd.choice([640, 1024, 4032]),
                    rnd.choice([480, 768, 3024]),
                    "JPEG",
                    rnd.uniform(20, 230),
                ),
                predicted=ClassFacts(cls, f"class {cls}", f"n{cls:08d}") if ok else None,
                model=rnd.choice(models) if ok else None,
                confidence=rnd.random() if ok else None,
                error_code=None if ok else "corrupt_image",
            )
        )
        if len(batch) == 500:
            recorder.record(batch)
            batch = []
    recorder.record(batch)


def timed(fn) -> float:
    """CPU seconds of this process: steadier than wall time on a shared machine."""
    started = time.process_time()
    fn()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        engine = make_engine(f"sqlite:///{tmp / 'imgclass.db'}")
        upgrade(engine)
        fill(engine, args.events)
        source_mb = (tmp / "imgclass.db").stat().st_size / 1e6
        print(f"warehouse: {args.events} events, {source_mb:.1f} MB\n")

        snap = tmp / "snapshot.db"
        api_s = timed(lambda: snapshot_database(engine, snap))
        vacuum = tmp / "vacuum.db"
        with sqlite3.connect(tmp / "imgclass.db") as con:
            vac_s = timed(lambda: con.execute("VACUUM INTO ?", (str(vacuum),)))
        print("| snapshot | CPU s | size MB |\n| --- | ---: | ---: |")
        print(f"| backup API (one step) | {api_s:.2f} | {snap.stat().st_size / 1e6:.1f} |")
        print(f"| VACUUM INTO | {vac_s:.2f} | {vacuum.stat().st_size / 1e6:.1f} |\n")

        mb = snap.stat().st_size / 1e6
        print("| format | size MB | ratio | compress MB/CPU-s | decompress MB/CPU-s |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for method in ("zstd", "gzip"):
            packed = tmp / f"snapshot.{method}"
            c_s = timed(lambda m=method, p=packed: compress(snap, p, m))
            d_s = timed(lambda m=method, p=packed: decompress(p, io.BytesIO(), m, 1 << 40))
            size = packed.stat().st_size / 1e6
            print(f"| {method} | {size:.1f} | {mb / size:.2f} | {mb / c_s:.0f} | {mb / d_s:.0f} |")
        engine.dispose()


if __name__ == "__main__":
    main()
