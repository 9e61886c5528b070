"""Slowloris: many connections trickling one byte at a time, while ordinary requests go on.

gunicorn's gthread worker reads a request in a worker thread once its first byte arrives,
so a few dozen connections that send their headers (or body) a byte every few seconds hold
every thread: measured with ``python -m bench.slowloris`` (docs/RELIABILITY.md), ordinary
requests straight to gunicorn then time out. The shipped nginx (deploy/nginx/nginx.conf)
is the layer that protects: it reads headers and whole bodies itself, event-driven, and
passes a request on only once it is complete; ``client_header_timeout`` drops a header that
does not finish. This test runs the real pair and requires every ordinary request to succeed
(within gunicorn's own timeout) while the slow clients, reopened as an attacker would,
keep coming.
"""

from __future__ import annotations

import pytest

from tests.support.nginx import NGINX_DIR, free_port, running_nginx, write_run_dir
from tests.support.server import serve
from tests.support.slowloris import SlowClients, probe_predictions

pytestmark = pytest.mark.slow

HOLD_S = 25  # longer than nginx's client_header_timeout, so it has to drop and meet new ones
GUNICORN_TIMEOUT_S = 60  # IMGCLASS_REQUEST_TIMEOUT_S's default


def header_timeout_s() -> int:
    for line in (NGINX_DIR / "nginx.conf").read_text().splitlines():
        if line.strip().startswith("client_header_timeout"):
            return int(line.split()[1].rstrip("s;"))
    raise AssertionError("nginx.conf sets no client_header_timeout")


def test_slow_clients_do_not_starve_the_server_behind_nginx(tmp_path, model_dir, cat_jpeg):
    assert header_timeout_s() < HOLD_S
    with serve(
        tmp_path / "data",
        model_dir,
        workers=1,
        cache_entries="0",
        rate_limit_per_ip="",
        rate_limit_per_key="",
    ) as base:
        app_port = int(base.rsplit(":", 1)[1])
        port = free_port()
        run_dir = write_run_dir([f"127.0.0.1:{app_port}"], f"127.0.0.1:{port}")
        with (
            running_nginx(run_dir, "127.0.0.1", port),
            # 4x the worker's threads in each kind: straight at gunicorn, either would do.
            SlowClients("127.0.0.1", port, 16, interval_s=1, mode="headers") as headers,
            SlowClients("127.0.0.1", port, 16, interval_s=1, mode="body") as bodies,
        ):
            results = probe_predictions(
                "127.0.0.1", port, cat_jpeg, HOLD_S, timeout_s=GUNICORN_TIMEOUT_S
            )
            still_open = headers.open_now + bodies.open_now
    assert len(results) >= 10
    assert [r.status for r in results] == [200] * len(results), [r.error for r in results]
    # The attack really ran: every slow client kept its connection or got a new one …
    assert still_open == 32
    assert headers.stats.bytes_sent >= 16 * 5 and bodies.stats.bytes_sent >= 16 * 5
    # … and nginx dropped the unfinished header blocks (each at least once), not the
    # trickling bodies, which it buffers without holding anything upstream.
    assert headers.stats.closed_by_server >= 16
    assert headers.stats.opened >= 32
