"""`make bench`: the model's limit and the service under load, in one run, as markdown.

python bench/run.py [--seconds 15] [--concurrency 1 4 16]
"""

from __future__ import annotations

import argparse
import platform
from datetime import UTC, datetime
from pathlib import Path

from bench import load, model_speed
from imgclass.config import available_cpus


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()

    limit = model_speed.measure(min(args.seconds, 10.0))
    service = load.measure(args.concurrency, args.seconds)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{available_cpus()} CPUs ({cpu_name()}), Python {platform.python_version()}"
    print(f"Measured {when} on {machine}.\n")
    print("| what | images/s |\n| --- | ---: |")
    for mode, rate in limit.items():
        print(f"| {mode} (640x480 JPEG, {available_cpus()} processes x 1 thread) | {rate:.1f} |")
    print(
        "\n| concurrency | requests/s | p50 ms | p95 ms | p99 ms | errors | fact rows = 2xx "
        "| vs decode+model |\n| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
    )
    for r in service:
        same = "yes" if r["fact_rows"] == r["ok"] else f"NO ({r['fact_rows']} vs {r['ok']})"
        share = r["rps"] / limit["decode+model"]
        print(
            f"| {r['concurrency']} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['errors']} | {same} | {share:.0%} |"
        )


if __name__ == "__main__":
    main()
