"""Throughput of the local cluster through nginx with 1, 2 and 3 replicas (wrk).

    python -m bench.cluster_bench [--replicas 1 2 3] [--concurrency 8] [--seconds 10]

Each size is started by scripts/cluster.py (as `make cluster` does) on free ports, on a
throwaway PostgreSQL database, without Redis (so no shared result cache) and with the
in-process result cache and the rate limits off: every request runs the model. wrk posts the
640x480 JPEG from bench.common (bench/wrk/multipart.lua) to nginx. Prometheus is not started.
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from bench.common import jpeg_640x480
from bench.wrk_load import run_wrk, wrk_available
from imgclass.config import available_cpus
from scripts.cluster import Cluster, ClusterSpec, free_port

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"


def distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return list(ports)


def measure(replicas: int, image: Path, concurrency: int, seconds: float, workdir: Path) -> dict:
    database = f"imgclass_bench_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        *replica_ports, nginx_port = distinct_free_ports(replicas + 1)
        spec = ClusterSpec(
            run_dir=workdir / f"cluster-{replicas}",
            replicas=replicas,
            nginx_port=nginx_port,
            replica_ports=replica_ports,
            database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
            redis_url=None,
            monitoring=False,
            env={
                "IMGCLASS_CACHE_ENTRIES": "0",
                "IMGCLASS_RATE_LIMIT_PER_IP": "",
                "IMGCLASS_RATE_LIMIT_PER_KEY": "",
                "IMGCLASS_DRIFT_INTERVAL_S": "0",
            },
        )
        with Cluster(spec) as cluster:
            url = cluster.url + "/api/v1/predict?top_k=1"
            run_wrk(url, image, concurrency, 2)  # warm-up: first inferences, connections
            result = run_wrk(url, image, concurrency, seconds)
        inference_threads = spec_inference_threads(replicas)
        return {"replicas": replicas, "inference_threads": inference_threads, **result}
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )


def spec_inference_threads(replicas: int) -> int:
    """What scripts/cluster.py gives each replica: the CPUs shared out, at least one."""
    return max(1, available_cpus() // replicas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if not wrk_available():
        raise SystemExit("wrk is not installed: apt-get install wrk")
    print(f"# {platform.processor() or platform.machine()}, {available_cpus()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "640x480.jpg"
        image.write_bytes(jpeg_640x480())
        for replicas in args.replicas:
            row = measure(replicas, image, args.concurrency, args.seconds, Path(tmp))
            print(json.dumps(row), flush=True)
            rows.append(row)
    print()
    print("| replicas | inference threads each | req/s | p50 ms | p99 ms | errors |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['replicas']} | {r['inference_threads']} | {r['rps']:.1f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |"
        )


if __name__ == "__main__":
    main()
