"""Drive a server with wrk (Debian's `wrk`, a C load generator) posting one image as multipart.

python -m bench.wrk_load URL IMAGE --concurrency 16 --seconds 15

wrk repeats one file, so a server with its result cache on answers all but the first
request from the cache: start it with IMGCLASS_CACHE_ENTRIES=0 to measure the model path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parent / "wrk" / "multipart.lua"


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, image: Path, concurrency: int, seconds: float, field: str = "image") -> dict:
    """requests/s, latency percentiles (ms) and errors for one wrk run.

    ``field``: the multipart field that carries the image ("data" for TorchServe).
    """
    threads = min(2, concurrency)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(SCRIPT),
        url,
    ]
    env = {**os.environ, "IMGCLASS_BENCH_IMAGE": str(image), "IMGCLASS_BENCH_FIELD": field}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    raw = json.loads(out.strip().splitlines()[-1])
    errors = raw["non_2xx"] + raw["socket_errors"] + raw["timeouts"]
    ok = raw["requests"] - raw["non_2xx"]
    return {
        "concurrency": concurrency,
        "requests": raw["requests"],
        "ok": ok,
        "errors": errors,
        "rps": ok / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("image", type=Path)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--field", default="image", help="multipart field of the image")
    args = parser.parse_args()
    for c in args.concurrency:
        print(json.dumps(run_wrk(args.url, args.image, c, args.seconds, args.field)))
