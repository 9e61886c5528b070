"""Load an `imgclass serve` instance with concurrent clients (a separate process).

Each client is a thread with its own keep-alive connection posting the same
640x480 JPEG as a raw image/jpeg body, for a fixed duration.

    python -m bench.load --concurrency 1 4 16 [--seconds 15]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import sqlite3
import threading
import time
from urllib.parse import urlparse

import numpy as np

from bench.common import jpeg_640x480, served


def _client(host, port, body, end, latencies, statuses, lock):
    conn = http.client.HTTPConnection(host, port, timeout=60)
    mine, codes = [], []
    while time.perf_counter() < end:
        started = time.perf_counter()
        try:
            conn.request("POST", "/api/v1/predict?top_k=5", body, {"Content-Type": "image/jpeg"})
            resp = conn.getresponse()
            resp.read()
            codes.append(resp.status)
        except (OSError, http.client.HTTPException):
            codes.append(0)
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=60)
        mine.append(time.perf_counter() - started)
    with lock:
        latencies.extend(mine)
        statuses.extend(codes)


def _run_clients(base: str, body: bytes, concurrency: int, seconds: float, out) -> None:
    url = urlparse(base)
    latencies, statuses, lock = [], [], threading.Lock()
    end = time.perf_counter() + seconds
    threads = [
        threading.Thread(
            target=_client, args=(url.hostname, url.port, body, end, latencies, statuses, lock)
        )
        for _ in range(concurrency)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    out.put({"elapsed": elapsed, "latencies": latencies, "statuses": statuses})


def load(base: str, body: bytes, concurrency: int, seconds: float) -> dict:
    """Run the clients in a separate process so they do not share our interpreter."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_clients, args=(base, body, concurrency, seconds, queue))
    proc.start()
    raw = queue.get()
    proc.join()
    lat = np.array(raw["latencies"]) * 1000
    ok = sum(1 for s in raw["statuses"] if s == 200)
    return {
        "concurrency": concurrency,
        "requests": len(raw["statuses"]),
        "ok": ok,
        "errors": len(raw["statuses"]) - ok,
        "rps": ok / raw["elapsed"],
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def measure(concurrencies: list[int], seconds: float) -> list[dict]:
    body = jpeg_640x480()
    results = []
    with served() as (base, data_dir):
        load(base, body, 2, 3)  # warm-up: both workers loaded and jitted
        for c in concurrencies:
            with sqlite3.connect(data_dir / "imgclass.db") as db:
                before = db.execute(
                    "SELECT COUNT(*) FROM api_event_fact WHERE status_code = 200"
                ).fetchone()[0]
            result = load(base, body, c, seconds)
            with sqlite3.connect(data_dir / "imgclass.db") as db:
                after = db.execute(
                    "SELECT COUNT(*) FROM api_event_fact WHERE status_code = 200"
                ).fetchone()[0]
            result["fact_rows"] = after - before
            results.append(result)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    for row in measure(args.concurrency, args.seconds):
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}))
