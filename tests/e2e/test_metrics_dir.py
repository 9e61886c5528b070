"""Two real `imgclass serve` on one data dir: each server's metrics stay its own.

Several servers on one data dir are legitimate (SQLite takes writers from several
processes). Each must count only its own traffic, whatever the other does: start
beside it, fail to bind its port, stop, or die without cleaning up.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from imgclass.config import Settings
from tests.support.prom import parse, value
from tests.support.server import Server, environment, imgclass_command
from tests.support.servers import http_get, pid_running

pytestmark = pytest.mark.slow

PREDICT = "/api/v1/predict"


def predict(server: Server, image: bytes) -> None:
    req = urllib.request.Request(
        server.base + PREDICT, data=image, headers={"Content-Type": "image/jpeg"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200


def predicts(server: Server) -> float:
    status, body = http_get(server.base + "/metrics")
    assert status == 200, body
    samples = parse(body.decode())
    assert samples, "an empty /metrics page"
    return value(samples, "imgclass_http_requests_total", endpoint=PREDICT, status="200")


def run_serve(data_dir, model_dir, log_path, **settings: str) -> subprocess.CompletedProcess:
    """``imgclass serve`` expected to give up at start: its exit code, output in the log."""
    with open(log_path, "wb") as log:
        return subprocess.run(
            imgclass_command("serve"),
            env=environment(data_dir, model_dir, workers="1", **settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=90,
        )


def wait_gone(pids: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(pid_running(pid) for pid in pids):
        assert time.monotonic() < deadline, f"processes {pids} did not exit"
        time.sleep(0.1)


@pytest.fixture
def data_dir(tmp_path):
    """A data dir whose default metrics directories are removed after the test."""
    data = tmp_path / "data"
    yield data
    for leftover in own_dirs(data):
        subprocess.run(["rm", "-rf", str(leftover)], check=False)


def own_dirs(data_dir) -> set[Path]:
    """The default metrics directories of servers on ``data_dir`` (``<prefix>-<pid>``)."""
    prefix = Settings(data_dir=data_dir).default_metrics_prefix
    return set(prefix.parent.glob(prefix.name + "-*"))


def dir_of(data_dir, server: Server) -> Path:
    prefix = Settings(data_dir=data_dir).default_metrics_prefix
    return prefix.with_name(f"{prefix.name}-{server.proc.pid}")


def test_a_second_server_on_the_same_data_dir_leaves_the_first_ones_metrics_alone(
    tmp_path, data_dir, model_dir, cat_jpeg
):
    a = Server(data_dir, model_dir, {"workers": "1"}, log_path=tmp_path / "a.log")
    b = Server(data_dir, model_dir, {"workers": "1"}, log_path=tmp_path / "b.log")
    try:
        a.start()
        predict(a, cat_jpeg)
        assert predicts(a) == 1

        # The same command again: it cannot bind A's port and exits.
        again = run_serve(data_dir, model_dir, tmp_path / "again.log", port=str(a.port))
        assert again.returncode != 0
        assert "in use" in (tmp_path / "again.log").read_text()  # gunicorn: address in use
        assert predicts(a) == 1

        # Another port: a second server, counting on its own.
        b.start()
        predict(b, cat_jpeg)
        predict(b, cat_jpeg)
        assert (predicts(a), predicts(b)) == (1, 2)
        assert own_dirs(data_dir) == {dir_of(data_dir, a), dir_of(data_dir, b)}

        b.stop()
        assert b.proc.returncode == 0
        predict(a, cat_jpeg)
        assert predicts(a) == 2
        assert own_dirs(data_dir) == {dir_of(data_dir, a)}  # B removed its own, only its own
    finally:
        b.stop()
        a.stop()
    assert not own_dirs(data_dir)


def test_a_metrics_dir_another_live_server_holds_is_refused(tmp_path, model_dir, cat_jpeg):
    shared = tmp_path / "metrics"
    data_dir = tmp_path / "data"
    a = Server(data_dir, model_dir, {"workers": "1", "metrics_dir": str(shared)})
    try:
        a.start()
        predict(a, cat_jpeg)
        log_path = tmp_path / "b.log"
        refused = run_serve(data_dir, model_dir, log_path, metrics_dir=str(shared))
        assert refused.returncode != 0
        output = log_path.read_text()
        assert f"the metrics directory {shared} is in use by another imgclass server" in output
        assert f"(pid {a.proc.pid})" in output
        assert "Traceback" not in output
        assert predicts(a) == 1
    finally:
        a.stop()
    assert not shared.exists()


def test_a_dead_servers_directory_is_removed_when_the_next_one_starts(
    tmp_path, data_dir, model_dir
):
    a = Server(data_dir, model_dir, {"workers": "1"})
    a.start()
    workers = a.workers()
    a.kill_all()  # master and worker at once, as a crashed container goes: nobody cleans up
    wait_gone(workers)
    assert own_dirs(data_dir) == {dir_of(data_dir, a)}

    b = Server(data_dir, model_dir, {"workers": "1"})
    try:
        b.start()
        assert predicts(b) == 0
        assert own_dirs(data_dir) == {dir_of(data_dir, b)}
    finally:
        b.stop()
