"""`make bench`: the machine's limit and the service under wrk, in one run, as markdown.

Writes docs/benchmarks/latest.md (and prints it).

    python -m bench.run [--seconds 15] [--concurrency 1 4 16 64]   (from the repository root)
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import model_speed, torchserve_bench
from bench.common import REPO, served, served_baseline, test_images
from bench.wrk_load import run_wrk, wrk_available
from imgclass.config import available_cpus

OUTPUT = REPO / "docs" / "benchmarks" / "latest.md"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def ok_facts(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "imgclass.db") as db:
        query = "SELECT COUNT(*) FROM api_event_fact WHERE status_code = 200"
        return db.execute(query).fetchone()[0]


def settled_ok_facts(data_dir: Path) -> int:
    """The 2xx fact count once requests still in flight from the last run have finished."""
    count = ok_facts(data_dir)
    while True:
        time.sleep(0.5)
        again = ok_facts(data_dir)
        if again == count:
            return count
        count = again


def service_rows(images: dict[str, Path], concurrencies: list[int], seconds: float) -> list[dict]:
    """The service on cache misses: wrk repeats one file, so the result cache is turned off."""
    rows = []
    with served(CACHE_ENTRIES="0") as (base, data_dir):
        url = base + "/api/v1/predict"
        run_wrk(url, next(iter(images.values())), 4, 3)  # warm-up
        for name, path in images.items():
            for c in concurrencies:
                before = settled_ok_facts(data_dir)
                result = run_wrk(url, path, c, seconds)
                # wrk stops counting at the deadline; requests it had in flight still
                # complete and are recorded, so facts may exceed its count by up to c.
                extra = settled_ok_facts(data_dir) - before - result["ok"]
                result.update(image=name, facts_match=0 <= extra <= c)
                rows.append(result)
    return rows


CACHE_CONCURRENCY = 16


def cache_rows(images: dict[str, Path], seconds: float) -> list[dict]:
    """The same image repeated with the cache on: after the first request, every one is a hit."""
    rows = []
    with served() as (base, data_dir):
        url = base + "/api/v1/predict"
        for name, path in images.items():
            before = settled_ok_facts(data_dir)
            result = run_wrk(url, path, CACHE_CONCURRENCY, seconds)
            extra = settled_ok_facts(data_dir) - before - result["ok"]
            result.update(image=name, facts_match=0 <= extra <= CACHE_CONCURRENCY)
            rows.append(result)
    return rows


def render_cache(misses: list[dict], hits: list[dict]) -> list[str]:
    lines = [
        "",
        f"Result cache: the same image repeated at concurrency {CACHE_CONCURRENCY}, cache on "
        "(every request after the first is a hit) against the miss rows above (cache off).",
        "",
        "| image | hit req/s | hit p50 ms | hit p99 ms | errors | facts = 2xx | miss req/s "
        "| hit / miss |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    index = {(r["image"], r["concurrency"]): r for r in misses}
    for h in hits:
        miss = index.get((h["image"], CACHE_CONCURRENCY))
        ratio = f"{h['rps'] / miss['rps']:.1f}x" if miss and miss["rps"] else "-"
        lines.append(
            f"| {h['image']} | {h['rps']:.1f} | {h['p50_ms']:.1f} | {h['p99_ms']:.1f} "
            f"| {h['errors']} | {'yes' if h['facts_match'] else 'NO'} "
            f"| {miss['rps'] if miss else 0:.1f} | {ratio} |"
        )
    return lines


BASELINE_IMAGES = ("640x480 JPEG", "4032x3024 JPEG")
BASELINE_CONCURRENCY = (4, 16)


def baseline_rows(images: dict[str, Path], seconds: float) -> list[dict]:
    """The tutorial-style Flask + PyTorch app under the same load, for the ratio."""
    rows = []
    with served_baseline(available_cpus()) as base:
        url = base + "/predict"
        run_wrk(url, images[BASELINE_IMAGES[0]], 2, 3)  # warm-up
        for name in BASELINE_IMAGES:
            for c in BASELINE_CONCURRENCY:
                result = run_wrk(url, images[name], c, seconds)
                rows.append({**result, "image": name, "server": "tutorial Flask + PyTorch"})
    return rows


def render_baseline(
    ours: list[dict], baseline: list[dict], torchserve: str | list[dict]
) -> list[str]:
    """``torchserve``: its rows, or why it was not measured."""
    lines = [
        "",
        "Baseline: tutorial-style Flask + PyTorch + per-request sqlite3 (bench/baseline_app.py), "
        "gunicorn sync workers, one per CPU, one torch thread each, same wrk load.",
    ]
    if isinstance(torchserve, str):
        lines.append(f"TorchServe not measured: {torchserve}.")
        torchserve = []
    else:
        runs = {r["server"]: torchserve_bench.describe(r) for r in torchserve}
        lines.append(
            f"TorchServe {torchserve_bench.version()} (bench/torchserve_bench.py) serving the "
            "same weights with its image-classifier preprocessing, multipart field `data`: "
            + "; ".join(f"{server}: {how}" for server, how in runs.items())
            + ". wrk counts completed requests only: a row with few completed requests "
            "had the rest still queued at its deadline."
        )
    lines += [
        "",
        "| server | image | concurrency | req/s | completed | p99 ms | errors "
        "| imgclass req/s | imgclass / server |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    index = {(r["image"], r["concurrency"]): r for r in ours}
    for b in baseline + torchserve:
        mine = index.get((b["image"], b["concurrency"]))
        ratio = f"{mine['rps'] / b['rps']:.1f}x" if mine and b["rps"] else "-"
        lines.append(
            f"| {b['server']} | {b['image']} | {b['concurrency']} | {b['rps']:.1f} "
            f"| {b['requests']} | {b['p99_ms']:.1f} | {b['errors']} "
            f"| {mine['rps'] if mine else 0:.1f} | {ratio} |"
        )
    return lines


def render(limit: dict[str, float], rows: list[dict], seconds: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpus = available_cpus()
    lines = [
        "# Latest benchmark (generated by `make bench`)",
        "",
        f"Measured {when} on {cpus} CPUs ({cpu_name()}), Python {platform.python_version()}; "
        f"wrk posting multipart, {seconds:.0f} s per row.",
        "",
        "| limit | images/s |",
        "| --- | ---: |",
    ]
    lines += [
        f"| {name} ({cpus} processes x 1 thread) | {rate:.1f} |" for name, rate in limit.items()
    ]
    lines += [
        "",
        "| image | concurrency | requests/s | p50 ms | p95 ms | p99 ms | errors | facts = 2xx "
        "| vs decode+model |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in rows:
        share = r["rps"] / limit[f"decode+model {r['image']}"]
        lines.append(
            f"| {r['image']} | {r['concurrency']} | {r['rps']:.1f} | {r['p50_ms']:.1f} "
            f"| {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} "
            f"| {'yes' if r['facts_match'] else 'NO'} | {share:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    args = parser.parse_args()
    if not wrk_available():
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench does this)")
    images = test_images()
    torchserve_missing = torchserve_bench.unavailable()
    if torchserve_missing:
        print(f"TorchServe will not be measured: {torchserve_missing}")
    limit = model_speed.measure(min(args.seconds, 10.0), images)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, data in images.items():
            path = Path(tmp) / name.replace(" ", "-").lower()
            path.write_bytes(data)
            paths[name] = path
        rows = service_rows(paths, args.concurrency, args.seconds)
        hits = cache_rows(paths, args.seconds)
        baseline = baseline_rows(paths, args.seconds)
        torchserve = torchserve_missing or torchserve_bench.torchserve_rows(
            paths, args.seconds, BASELINE_IMAGES, BASELINE_CONCURRENCY
        )
    report = render(limit, rows, args.seconds)
    extra = render_cache(rows, hits) + render_baseline(rows, baseline, torchserve)
    report += "\n".join(extra) + "\n"
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
