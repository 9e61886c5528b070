"""The multiprocess directory: cleaned at start, import order enforced, exited workers dropped.

Each case runs in a fresh interpreter, because prometheus_client picks its mode
once per process, at import (the test process has long imported it).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from imgclass.config import Settings
from tests.support.prom import parse, value


def run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_enable_removes_only_an_earlier_runs_metric_files(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    for name in ("counter_12.db", "histogram_12.db", "gauge_livesum_12.db", "gauge_max_9.db"):
        (directory / name).write_bytes(b"stale")
    (directory / "notes.txt").write_text("not ours")
    (directory / "counter_x.db").write_text("not prometheus_client's name")
    done = run(
        f"""
        from pathlib import Path
        from imgclass.ops import multiproc
        multiproc.enable(Path({str(directory)!r}))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in directory.iterdir()) == ["counter_x.db", "notes.txt"]


def test_enable_refuses_once_prometheus_client_is_imported(tmp_path):
    done = run(
        f"""
        from pathlib import Path
        import imgclass.ops.metrics  # creates the metrics: too early
        from imgclass.ops import multiproc
        multiproc.enable(Path({str(tmp_path / "m")!r}))
        """,
        tmp_path,
    )
    assert done.returncode != 0
    assert "imported before the metrics directory was set up" in done.stderr


def test_values_of_several_processes_are_summed_and_dead_ones_live_gauges_dropped(tmp_path):
    # Two forked children count, as gunicorn workers do; the parent renders the merge.
    done = run(
        f"""
        import os
        from pathlib import Path
        from imgclass.ops import multiproc
        multiproc.enable(Path({str(tmp_path / "m")!r}))
        from imgclass.ops import metrics

        def child(requests, in_flight):
            for _ in range(requests):
                metrics.observe_request("/api/v1/predict", 200, 0.01)
            metrics.IMAGES_IN_FLIGHT.inc(in_flight)
            metrics.set_ready("model", True)
            os._exit(0)

        pids = []
        for requests, in_flight in ((3, 2), (4, 5)):
            pid = os.fork()
            if pid == 0:
                child(requests, in_flight)
            os.waitpid(pid, 0)
            pids.append(pid)
        print(metrics.render()[0].decode())
        print("=====")
        multiproc.worker_exited(pids[1])
        print(metrics.render()[0].decode())
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    both, after_exit = (parse(page) for page in done.stdout.split("=====\n"))
    requests = {"endpoint": "/api/v1/predict", "status": "200"}
    assert value(both, "imgclass_http_requests_total", **requests) == 7
    assert (
        value(both, "imgclass_http_request_duration_seconds_count", endpoint="/api/v1/predict") == 7
    )
    assert value(both, "imgclass_images_in_flight") == 7
    # The exited worker's requests happened; its images are no longer in flight.
    assert value(after_exit, "imgclass_http_requests_total", **requests) == 7
    assert value(after_exit, "imgclass_images_in_flight") == 2
    assert value(after_exit, "imgclass_ready", check="model") == 1


def test_default_directory_is_off_the_data_disk_and_one_per_data_dir(tmp_path):
    a = Settings(data_dir=tmp_path / "a")
    b = Settings(data_dir=tmp_path / "b")
    assert a.effective_metrics_dir == Settings(data_dir=tmp_path / "a").effective_metrics_dir
    assert a.effective_metrics_dir != b.effective_metrics_dir
    if Path("/dev/shm").is_dir():
        assert a.effective_metrics_dir.parent == Path("/dev/shm")
    mine = Settings(data_dir=tmp_path / "a", metrics_dir=tmp_path / "m")
    assert mine.effective_metrics_dir == tmp_path / "m"
