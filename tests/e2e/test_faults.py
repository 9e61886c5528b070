"""Faults under load, for real: SIGKILL a worker, SIGKILL the whole server, fill the disk,
and restart the PostgreSQL server under a running service (fast and immediate shutdown).

After each: the database is intact, every 2xx response has exactly one fact row, failures
were clear 503s rather than acknowledged and dropped, /readyz told the truth, and the service
recovered by itself. (A database that refuses writes is tested at the API level in
tests/api/test_errors.py: the kernel refuses to remount a tmpfs read-only under an open
database.) The PostgreSQL test runs its own server (tests/support/pgcluster.py), never the
shared one on 127.0.0.1:5432 that other tests use in parallel. The server, the load and the
check of the outcomes are in tests/support/load.py.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections import Counter

import pytest

from tests.conftest import jpeg_bytes
from tests.support import pgcluster
from tests.support.disk import fill
from tests.support.load import (
    SUCCESS_ROWS,
    UNDER_LOAD,
    Load,
    check_nothing_acknowledged_was_lost,
    check_outcomes,
    multipart,
    post,
)
from tests.support.server import Server

pytestmark = pytest.mark.slow


@pytest.fixture
def image(photos) -> bytes:
    return jpeg_bytes(photos["chelsea"])


@pytest.fixture
def server(tmp_path, model_dir):
    srv = Server(tmp_path / "data", model_dir, UNDER_LOAD)
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
    server = Server(small_disk / "data", model_dir, UNDER_LOAD)
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


def check_postgresql_intact(pg: pgcluster.Server, database: str) -> Counter:
    """amcheck (PostgreSQL's integrity check) on every table and index; the success rows."""
    with pg.connect(database) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT relname FROM pg_class WHERE relkind = 'r'"
                " AND relnamespace = 'public'::regnamespace"
            )
        ]
        for table in tables:
            corrupt = conn.execute("SELECT * FROM verify_heapam(%s)", (table,)).fetchall()
            assert corrupt == [], (table, corrupt)
        # heapallindexed: every heap tuple is in each index, not only a well-formed tree.
        conn.execute(
            "SELECT bt_index_check(c.oid, true) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam"
            " WHERE am.amname = 'btree' AND c.relnamespace = 'public'::regnamespace"
        )
        return Counter(request_id for (request_id,) in conn.execute(SUCCESS_ROWS))


def wait_until(predicate, timeout_s: float) -> float | None:
    """Seconds until ``predicate()`` held, polling; None if it never did within the time."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    return None


DB_DOWN_S = 4
RECOVERY_S = 15  # the pool must serve again this soon after the server is back


@pytest.mark.postgresql
def test_postgresql_restart_under_load(tmp_path, model_dir, image):
    key = "imgc_" + secrets.token_urlsafe(32)
    with pgcluster.single_server() as pg:
        with pg.connect() as conn:
            conn.execute("CREATE DATABASE imgclass")
        server = Server(
            tmp_path / "data",
            model_dir,
            {
                **UNDER_LOAD,
                "database_url": pg.url("imgclass"),
                "admin_key": key,
                "rate_limit_per_key": "",  # the keyed load is one key
            },
            log_path=tmp_path / "serve.log",
        )
        outages, recoveries = [], []
        try:
            server.start()
            workers = set(server.workers())
            # Anonymous clients, and clients with a key (looked up in the database too).
            with (
                Load(server.port, image, threads=2) as anonymous,
                Load(server.port, image, threads=2, authorization=f"Bearer {key}") as keyed,
            ):
                loads = (anonymous, keyed)

                def answered() -> int:
                    return sum(len(load.outcomes) for load in loads)

                def wait_for(n: int) -> None:
                    deadline = time.monotonic() + 60
                    while answered() < n and time.monotonic() < deadline:
                        time.sleep(0.05)

                wait_for(20)
                for mode in ("fast", "immediate"):
                    stopping = time.monotonic()
                    pg.stop(mode)
                    down = time.monotonic()
                    readyz = []
                    while time.monotonic() - down < DB_DOWN_S:
                        readyz.append(server.readyz())
                        time.sleep(0.3)
                    up = time.monotonic()
                    pg.start()
                    back = time.monotonic()
                    recovered = wait_until(lambda: server.readyz() == 200, RECOVERY_S)
                    outages.append((mode, stopping, down, up, back, readyz))
                    recoveries.append(recovered)
                    assert set(readyz) == {503}, (mode, readyz)  # it said so, every time
                    assert recovered is not None, f"no recovery {RECOVERY_S}s after {mode}"
                    wait_for(answered() + 60)
            # imgclass itself never went away: no worker died or was replaced.
            assert set(server.workers()) == workers and len(workers) == 2
        finally:
            server.stop()
            print(server.log_path.read_text()[-5000:] if server.log_path.exists() else "")
        outcomes = anonymous.outcomes + keyed.outcomes
        rows = check_postgresql_intact(pg, "imgclass")
    statuses = check_outcomes(rows, outcomes)
    assert statuses[None] == 0, statuses  # no connection was dropped
    for (mode, _, down, up, back, _), recovered in zip(outages, recoveries, strict=True):
        during = [o for o in outcomes if o.started > down and o.ended < up]
        assert during and all(o.status == 503 for o in during), (
            mode,
            Counter(o.status for o in during),
        )
        for load in loads:  # anonymous and keyed clients alike got the clear refusal
            assert any(o.started > down and o.ended < up for o in load.outcomes), mode
        after = [o for o in outcomes if o.started > up]
        assert any(o.status == 200 for o in after), mode
        # Once /readyz says so, every worker's pool serves: no stale connection is handed out.
        ready = back + recovered
        until = min([s for _, s, *_ in outages if s > ready] + [ready + 5])  # the next outage
        late = [o for o in outcomes if ready < o.started and o.ended < until and o.status != 200]
        assert not late, (mode, late)
    for load in loads:  # and both got served again at the end
        assert load.outcomes[-1].status == 200, load.outcomes[-1]
    for (mode, _, down, up, back, readyz), recovered in zip(outages, recoveries, strict=True):
        first_ok = min(o.ended for o in outcomes if o.status == 200 and o.started > up) - back
        refused = sum(o.status == 503 for o in outcomes if down < o.started < up)
        print(
            f"{mode}: {refused} refused while down, /readyz 503 x{len(readyz)}; PostgreSQL"
            f" started in {back - up:.1f} s, then /readyz 200 after {recovered:.1f} s and the"
            f" first 200 after {max(first_ok, 0):.1f} s"
        )
    print(f"PostgreSQL restarts: {len(outcomes)} requests, {dict(statuses)}")
