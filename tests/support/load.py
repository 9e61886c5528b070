"""A real ``imgclass serve`` under load, and the check that nothing acknowledged was lost.

The server itself is ``tests.support.server.Server`` (its own process group, so a test can
SIGKILL all of it), with the ``UNDER_LOAD`` settings. ``Load`` keeps client threads posting a
photo, each request with its own ``X-Request-ID``, and keeps every ``Outcome``;
``check_outcomes`` matches them to the stored success rows. Used by the fault tests
(tests/e2e/test_faults.py) and the limit tests (tests/e2e/test_limits.py).
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

BOUNDARY = "imgclass-fault-test"
# Settings of a server under these tests: every request goes through decode and the model
# (no result cache), and the load, from one address, is never rate-limited.
UNDER_LOAD = {"cache_entries": "0", "rate_limit_per_ip": ""}


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
    started: float = 0.0  # time.monotonic() when the request was sent …
    ended: float = 0.0  # … and when its answer (or the connection error) came


def post(port: int, body: bytes, authorization: str | None = None) -> Outcome:
    request_id = uuid.uuid4().hex
    headers = {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "X-Request-ID": request_id,
    }
    if authorization:
        headers["Authorization"] = authorization
    started = time.monotonic()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/api/v1/predict", body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
    except (OSError, http.client.HTTPException):
        # No answer, or one cut off mid-body (IncompleteRead: the server was killed while
        # sending it): the client was not told anything, so nothing was acknowledged.
        return Outcome(request_id, None, started=started, ended=time.monotonic())
    code = None
    if resp.status >= 400:
        code = json.loads(payload)["error"]["code"]
    return Outcome(
        request_id, resp.status, code, resp.getheader("Retry-After"), started, time.monotonic()
    )


class Load:
    """Client threads posting images until stopped; every outcome is kept."""

    def __init__(self, port: int, image: bytes, threads: int = 4, authorization: str | None = None):
        self.port = port
        self.body = multipart(image)
        self.authorization = authorization
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            outcome = post(self.port, self.body, self.authorization)
            self.outcomes.append(outcome)
            if outcome.status in (None, 503):
                time.sleep(0.05)  # the server or its storage is down: do not spin

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


SUCCESS_ROWS = "SELECT request_id FROM api_event_fact WHERE status_code = 200"


def check_nothing_acknowledged_was_lost(db_path: Path, outcomes: list[Outcome]) -> Counter:
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = Counter(request_id for (request_id,) in conn.execute(SUCCESS_ROWS))
    return check_outcomes(rows, outcomes)


def check_outcomes(rows: Counter, outcomes: list[Outcome]) -> Counter:
    """Match the answers to the stored success rows (request id -> count); the statuses."""
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
