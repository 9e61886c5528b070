"""Slowloris against ``imgclass serve``: straight at gunicorn, and through the shipped nginx.

    .venv/bin/python -m bench.slowloris [--connections 64] [--interval 2] [--seconds 40]

For each target and each kind of slow client (an endless header block; complete headers and
a body that trickles), opens ``--connections`` slow connections, each sending one byte
every ``--interval`` seconds (and reopened when the server drops it), and meanwhile sends an
ordinary predict request every half second on a fresh connection, with a 30 s client
timeout (below gunicorn's 60 s worker timeout). Prints, per case, how many of those
requests succeeded and how long they took, and what the server did to the slow ones.
Everything runs on loopback; nothing is left running.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import jpeg_640x480  # noqa: E402
from tests.support.nginx import free_port, running_nginx, write_run_dir  # noqa: E402
from tests.support.server import serve  # noqa: E402
from tests.support.slowloris import SlowClients, probe_predictions  # noqa: E402

PROBE_TIMEOUT_S = 30


def run_case(port: int, connections: int, interval: float, seconds: float, mode: str) -> dict:
    image = jpeg_640x480()
    with SlowClients("127.0.0.1", port, connections, interval_s=interval, mode=mode) as slow:
        time.sleep(interval * 2)  # let every slow client start trickling
        results = probe_predictions("127.0.0.1", port, image, seconds, PROBE_TIMEOUT_S)
        stats = slow.stats
    ok = [r.seconds for r in results if r.status == 200]
    return {
        "requests": len(results),
        "ok": len(ok),
        "p50_s": statistics.median(ok) if ok else None,
        "max_s": max((r.seconds for r in results), default=None),
        "failures": sorted({r.error or str(r.status) for r in results if r.status != 200}),
        "slow_opened": stats.opened,
        "slow_closed_by_server": stats.closed_by_server,
        "answers": dict(stats.answers),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "data"
        base = stack.enter_context(
            serve(
                data_dir,
                REPO / "models",
                workers=args.workers,
                rate_limit_per_ip="",
                rate_limit_per_key="",
                cache_entries="0",
            )
        )
        app_port = int(base.rsplit(":", 1)[1])
        nginx_port = free_port()
        run_dir = write_run_dir([f"127.0.0.1:{app_port}"], f"127.0.0.1:{nginx_port}")
        stack.enter_context(running_nginx(run_dir, "127.0.0.1", nginx_port))
        for target, port in (("gunicorn", app_port), ("nginx", nginx_port)):
            for mode in ("headers", "body"):
                result = run_case(port, args.connections, args.interval, args.seconds, mode)
                rows.append((target, mode, result))
                print(target, mode, result, flush=True)
    print()
    print(
        f"| target | slow clients ({args.connections}, 1 byte / {args.interval:g} s) | "
        "requests ok | p50 s | max s | slow connections closed by the server |"
    )
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for target, mode, r in rows:
        p50 = f"{r['p50_s']:.2f}" if r["p50_s"] is not None else "-"
        answers = ", ".join(f"{k} x{v}" for k, v in sorted(r["answers"].items())) or "none"
        print(
            f"| {target} | {mode} | {r['ok']}/{r['requests']} | {p50} | {r['max_s']:.2f} | "
            f"{r['slow_closed_by_server']} ({answers}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
