"""The multiprocess directory: one per server, cleaned at start, import order enforced,
exited workers dropped, a directory another live server holds refused.

Each case runs in a fresh interpreter, because prometheus_client picks its mode
once per process, at import (the test process has long imported it).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from imgclass.config import Settings
from tests.support.prom import parse, series, value


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


def test_the_named_classes_are_the_servers_not_each_workers(tmp_path):
    # A worker counts four classes and dies; its replacement counts others. The
    # server still names only its first three classes (IMGCLASS_METRICS_TOP_CLASSES=3).
    done = run(
        f"""
        import os
        from pathlib import Path
        from imgclass.ops import multiproc
        multiproc.enable(Path({str(tmp_path / "m")!r}))
        from imgclass.ops import metrics

        def worker(classes):
            metrics.configure(top_classes=3)  # as each worker's create_app does
            for name in classes:
                metrics.observe_prediction(name, 0.9)
            os._exit(0)

        for classes in (["tabby", "espresso", "rocket", "tabby", "goldfish"],
                        ["volcano", "tabby", "daisy", "espresso"]):
            pid = os.fork()
            if pid == 0:
                worker(classes)
            os.waitpid(pid, 0)
            multiproc.worker_exited(pid)
        print(metrics.render()[0].decode())
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    counts = {
        dict(labels)["class_name"]: n
        for labels, n in series(parse(done.stdout), "imgclass_predictions_total").items()
    }
    assert counts == {"tabby": 3, "espresso": 2, "rocket": 1, "other": 3}


def test_default_directory_is_off_the_data_disk_and_one_per_data_dir(tmp_path):
    a = Settings(data_dir=tmp_path / "a")
    b = Settings(data_dir=tmp_path / "b")
    assert a.default_metrics_prefix == Settings(data_dir=tmp_path / "a").default_metrics_prefix
    assert a.default_metrics_prefix != b.default_metrics_prefix
    if Path("/dev/shm").is_dir():
        assert a.default_metrics_prefix.parent == Path("/dev/shm")
    assert a.explicit_metrics_dir is None
    mine = Settings(data_dir=tmp_path / "a", metrics_dir=tmp_path / "m")
    assert mine.explicit_metrics_dir == tmp_path / "m"


HOLD = """
    import sys
    from pathlib import Path
    from imgclass.ops import multiproc
    {claim}
    print(directory, flush=True)
    sys.stdin.readline()  # hold it until the test closes our stdin
    multiproc.cleanup()
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process that claims a metrics directory and holds it; yields (process, dir)."""
    started = []

    def start(claim: str) -> tuple[subprocess.Popen, Path]:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(HOLD.format(claim=claim))],
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc, Path(proc.stdout.readline().strip())

    yield start
    for proc in started:
        proc.stdin.close()
        proc.wait(30)


def test_a_directory_held_by_a_live_server_is_refused_and_free_once_it_exits(tmp_path, holder):
    shared = tmp_path / "metrics"
    first, _ = holder(f"directory = multiproc.claim(Path({str(shared)!r}))")
    claim = f"""
        from pathlib import Path
        from imgclass.ops import multiproc
        multiproc.claim(Path({str(shared)!r}))
        print("claimed")
        """
    refused = run(claim, tmp_path)
    assert refused.returncode != 0
    assert f"the metrics directory {shared} is in use by another imgclass server" in (
        refused.stderr
    )
    assert f"(pid {first.pid})" in refused.stderr and "IMGCLASS_METRICS_DIR" in refused.stderr

    first.stdin.close()
    assert first.wait(30) == 0
    assert not shared.exists()  # the first one removed its directory on the way out
    done = run(claim, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "claimed", done.stderr


def test_each_server_gets_its_own_directory_and_dead_servers_ones_are_removed(tmp_path, holder):
    prefix = tmp_path / "imgclass-metrics-x"
    live, live_dir = holder(f"directory = multiproc.own_directory(Path({str(prefix)!r}))")
    assert live_dir == tmp_path / f"imgclass-metrics-x-{live.pid}"
    (live_dir / "counter_1.db").write_bytes(b"live")

    # A server SIGKILLed without cleaning up: its lock file is there, nobody holds it.
    # The pid in its name is a live process (ours) to show that the lock decides,
    # not the pid, which an unrelated process may have been given since.
    dead = tmp_path / f"imgclass-metrics-x-{os.getpid()}"
    dead.mkdir()
    (dead / "counter_7.db").write_bytes(b"stale")
    (dead / "imgclass-server.lock").write_text("7\n")
    # A server that died between creating its directory and locking it.
    half = tmp_path / "imgclass-metrics-x-999999999"
    half.mkdir()
    # Not ours: another data dir's prefix, and an unrelated name.
    other = tmp_path / "imgclass-metrics-xy-1"
    other.mkdir()

    done = run(
        f"""
        import os
        from pathlib import Path
        from imgclass.ops import multiproc
        print(multiproc.own_directory(Path({str(prefix)!r})))
        print(os.getpid())
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    directory, pid = done.stdout.split()
    assert directory == str(tmp_path / f"imgclass-metrics-x-{pid}")
    assert not dead.exists() and not half.exists()
    assert (live_dir / "counter_1.db").read_bytes() == b"live"
    assert other.exists()
    # The claiming process held its lock only while it lived: its directory is stale now.
    with open(Path(directory) / "imgclass-server.lock") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
