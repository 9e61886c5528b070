"""Where a worker's time goes under load: py-spy on every gunicorn process while wrk runs.

    python -m bench.profile_service [--cache off|on] [--concurrency 16] [--seconds 15]

Starts `imgclass serve` (result cache off by default, so every request decodes and runs
the model; ``--cache on`` repeats one image, so every request after the first is a hit),
drives it with wrk on the 640x480 JPEG, and samples each process listening on its port
(the master and the workers) with ``py-spy record --nonblocking -f raw``. Prints each
process's number of active samples (how the load is spread over the workers) and, for the
busiest, the share of samples under a few frames of interest. The raw files are kept in
``--out`` for flame graphs. py-spy comes with the dev extra.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import served, test_images
from bench.wrk_load import run_wrk

# Frame substrings, first match wins (a sample counts once).
FRAMES = {
    "ONNX Runtime run": "run (onnxruntime",
    "waiting for the inference slot": "CircuitBreaker.call",
    "warehouse transaction": "_write (imgclass/warehouse",
    "preprocess": "preprocess",
    "decode": "ImageFile.load",
    "sha256 (cache key)": "sha256",
    "multipart parsing": "MultipartDecoder",
    "metrics": "imgclass/ops/metrics",
}


def listening_pids(port: str) -> list[str]:
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return sorted(set(re.findall(r"pid=(\d+)", out)))


def shares(raw: Path) -> tuple[int, collections.Counter]:
    """Active samples in a py-spy raw file, and how many fall under each of FRAMES."""
    total, counts = 0, collections.Counter()
    for line in raw.read_text().splitlines():
        stack, n = line.rsplit(" ", 1)
        total += int(n)
        label = next((name for name, frame in FRAMES.items() if frame in stack), "other")
        counts[label] += int(n)
    return total, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", choices=("off", "on"), default="off")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="py-spy-")))
    args = parser.parse_args()
    spy = Path(sys.executable).parent / "py-spy"
    image = args.out / "640x480.jpg"
    args.out.mkdir(parents=True, exist_ok=True)
    image.write_bytes(test_images()["640x480 JPEG"])
    settings = {} if args.cache == "on" else {"CACHE_ENTRIES": "0"}
    with served(**settings) as (base, _data_dir):
        url = base + "/api/v1/predict"
        run_wrk(url, image, 4, 3)  # warm-up (and the first, missing, request of a hit run)
        result: dict = {}
        load = threading.Thread(
            target=lambda: result.update(run_wrk(url, image, args.concurrency, args.seconds + 6))
        )
        load.start()
        time.sleep(3)
        pids = listening_pids(base.rsplit(":", 1)[1])
        record = [str(spy), "record", "--nonblocking", "-r", "200", "-f", "raw"]
        spies = [
            subprocess.Popen(
                [
                    *record,
                    "-d",
                    str(int(args.seconds)),
                    "-p",
                    pid,
                    "-o",
                    str(args.out / f"{pid}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in pids
        ]
        for proc in spies:
            proc.wait()
        load.join()
    print(f"wrk: {result.get('rps', 0):.1f} req/s, {result.get('errors')} errors")
    profiles = {pid: shares(args.out / f"{pid}.txt") for pid in pids}
    print("active samples per process:", {pid: t for pid, (t, _) in profiles.items()})
    busiest = max(profiles, key=lambda pid: profiles[pid][0])
    total, counts = profiles[busiest]
    print(f"busiest process {busiest}, {total} active samples:")
    for name, n in counts.most_common():
        print(f"  {n / total:6.1%}  {name}")
    print(f"raw profiles in {args.out}")


if __name__ == "__main__":
    main()
