"""Faults under load, for real: SIGKILL a worker, SIGKILL the whole server, fill the disk.

After each: the database is intact, every 2xx response has exactly one fact row, failures
were clear 503s rather than acknowledged and dropped, /readyz told the truth, and the service
recovered by itself. (A database that refuses writes is tested at the API level in
tests/api/test_errors.py: the kernel refuses to remount a tmpfs read-only under an open
database.)
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import jpeg_bytes
from tests.e2e.test_serve import free_port
from tests.support.disk import fill

pytestmark = pytest.mark.slow

BOUNDARY = "imgclass-fault-test"


def multipart(image: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


@dataclass
class Outcome:
    request_id: str
    status: int | None  # None: the connection failed (nothing was acknowledged)
    code: str | None = None
    retry_after: str | None = None


@dataclass
class Server:
    """`imgclass serve` in its own process group, so the whole server can be SIGKILLed."""

    data_dir: Path
    model_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "IMGCLASS_DATA_DIR": str(self.data_dir),
            "IMGCLASS_MODEL_DIR": str(self.model_dir),
            "IMGCLASS_PORT": str(self.port),
            "IMGCLASS_WORKERS": "2",
            "IMGCLASS_CACHE_ENTRIES": "0",  # every request goes through decode and the model
            "IMGCLASS_RATE_LIMIT_PER_IP": "",  # the load comes from one address
        }
        env.pop("IMGCLASS_DATABASE_URL", None)
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "imgclass"), "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.readyz() == 200:
                return
            time.sleep(0.2)
        raise AssertionError("the server did not become ready")

    def readyz(self) -> int | None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/readyz")
            status = conn.getresponse().status
            conn.close()
            return status
        except OSError:
            return None

    def workers(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]

    def kill_all(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def post(port: int, body: bytes) -> Outcome:
    request_id = uuid.uuid4().hex
    headers = {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "X-Request-ID": request_id,
    }
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/api/v1/predict", body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
    except OSError:
        return Outcome(request_id, None)
    code = None
    if resp.status >= 400:
        code = json.loads(payload)["error"]["code"]
    return Outcome(request_id, resp.status, code, resp.getheader("Retry-After"))


class Load:
    """Client threads posting images until stopped; every outcome is kept."""

    def __init__(self, port: int, image: bytes, threads: int = 4):
        self.port = port
        self.body = multipart(image)
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            outcome = post(self.port, self.body)
            self.outcomes.append(outcome)
            if outcome.status is None:
                time.sleep(0.05)  # the server is down: do not spin

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def wait_for(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < n and time.monotonic() < deadline:
            time.sleep(0.05)


def check_nothing_acknowledged_was_lost(db_path: Path, outcomes: list[Outcome]) -> Counter:
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = Counter(
            request_id
            for (request_id,) in conn.execute(
                "SELECT request_id FROM api_event_fact WHERE status_code = 200"
            )
        )
    statuses = Counter(o.status for o in outcomes)
    for outcome in outcomes:
        if outcome.status == 200:
            assert rows[outcome.request_id] == 1, f"acknowledged {outcome.request_id} not stored"
        elif outcome.status is not None:
            # A refusal is never also a stored success.
            assert rows[outcome.request_id] == 0
            assert outcome.status == 503 and outcome.code == "storage_unavailable", outcome
            assert outcome.retry_after
    assert all(count == 1 for count in rows.values()), "a request was stored twice"
    return statuses


@pytest.fixture
def image(photos) -> bytes:
    return jpeg_bytes(photos["chelsea"])


@pytest.fixture
def server(tmp_path, model_dir):
    srv = Server(tmp_path / "data", model_dir)
    yield srv
    srv.stop()


def test_sigkill_of_a_worker_under_load(server, image):
    server.start()
    with Load(server.port, image) as load:
        load.wait_for(30)
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        load.wait_for(len(load.outcomes) + 60)
    # gunicorn's arbiter replaced the worker; the service answers.
    assert victim not in server.workers() and len(server.workers()) == 2
    assert post(server.port, multipart(image)).status == 200
    statuses = check_nothing_acknowledged_was_lost(server.data_dir / "imgclass.db", load.outcomes)
    assert statuses[200] >= 60


def test_sigkill_of_the_whole_server_and_restart(server, image):
    server.start()
    with Load(server.port, image) as load:
        load.wait_for(30)
        server.kill_all()
        time.sleep(0.5)
        server.start()  # same data dir, same port
        load.wait_for(len(load.outcomes) + 40)
    statuses = check_nothing_acknowledged_was_lost(server.data_dir / "imgclass.db", load.outcomes)
    assert statuses[200] >= 60 and statuses[None] >= 1  # some requests met the dead server


def test_full_disk_refuses_with_503_and_recovers(small_disk, model_dir, image):
    server = Server(small_disk / "data", model_dir)
    try:
        server.start()
        with Load(server.port, image, threads=3) as load:
            load.wait_for(20)
            filler = fill(small_disk)
            # Whatever was in flight settles; then everything must be refused.
            load.wait_for(len(load.outcomes) + 30)
            refused_from = len(load.outcomes)
            load.wait_for(refused_from + 20)
            during = load.outcomes[refused_from:]
            assert during and all(o.status == 503 for o in during), Counter(
                o.status for o in during
            )
            assert server.readyz() == 503
            filler.unlink()  # the operator frees space; no restart
            deadline = time.monotonic() + 30
            while server.readyz() != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert server.readyz() == 200
            after = len(load.outcomes)
            load.wait_for(after + 20)
            assert any(o.status == 200 for o in load.outcomes[after:])
    finally:
        server.stop()
    check_nothing_acknowledged_was_lost(small_disk / "data" / "imgclass.db", load.outcomes)
