"""Slow clients (slowloris) and a prober of normal requests, for tests and bench/slowloris.py.

``SlowClients`` keeps ``count`` connections open to a server, each sending its request one
byte every ``interval_s``: either a header block that never ends (``"headers"``) or complete
headers announcing a large body that then trickles (``"body"``). A connection the server
closes is counted (with the status line it answered, e.g. 408) and replaced by a new one, as
an attacker would. Only loopback addresses are accepted: this is load for servers we run.
"""

from __future__ import annotations

import http.client
import ipaddress
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

HEADERS_START = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n"
ENDLESS_HEADER = b"X-Slow: " + b"a" * 4000  # one byte at a time, never a CRLF
BODY_HEADERS = (
    b"POST /api/v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n"
    b"Content-Type: image/jpeg\r\nContent-Length: 1000000\r\n\r\n"
)


def _check_loopback(host: str) -> None:
    if not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
        raise ValueError(f"slow clients target loopback servers only, not {host}")


@dataclass
class _Slow:
    sock: socket.socket
    pending: bytes  # what is still to be sent, one byte per tick
    opened: float


@dataclass
class SlowStats:
    opened: int = 0
    closed_by_server: int = 0
    bytes_sent: int = 0
    answers: Counter = field(default_factory=Counter)  # first status line the server sent
    refused: int = 0  # connect() failures


class SlowClients:
    def __init__(
        self, host: str, port: int, count: int, *, interval_s: float = 2.0, mode: str = "headers"
    ):
        _check_loopback(host)
        if mode not in ("headers", "body"):
            raise ValueError(mode)
        self.host, self.port, self.count = host, port, count
        self.interval_s, self.mode = interval_s, mode
        self.stats = SlowStats()
        self._conns: list[_Slow] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)

    def __enter__(self) -> SlowClients:
        for _ in range(self.count):
            self._open()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for conn in self._conns:
            conn.sock.close()

    @property
    def open_now(self) -> int:
        return len(self._conns)

    def _open(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=5)
        except OSError:
            self.stats.refused += 1
            return
        sock.setblocking(False)
        if self.mode == "headers":
            first, pending = HEADERS_START, ENDLESS_HEADER
        else:
            first, pending = BODY_HEADERS, b"\xff" * 1_000_000
        try:
            sock.send(first)  # the request line arrives at once, like a real client's
        except OSError:
            sock.close()
            self.stats.refused += 1
            return
        self.stats.opened += 1
        self._conns.append(_Slow(sock, pending, time.monotonic()))

    def _closed(self, conn: _Slow) -> bool:
        """True if the server answered or closed (the answer's status line is counted)."""
        readable, _, _ = select.select([conn.sock], [], [], 0)
        if not readable:
            return False
        try:
            data = conn.sock.recv(4096)
        except OSError:
            data = b""
        line = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        self.stats.answers[" ".join(line.split(" ")[:2]) or "closed"] += 1
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            kept = []
            for conn in self._conns:
                alive = not self._closed(conn)
                if alive and conn.pending:
                    try:
                        conn.sock.send(conn.pending[:1])
                        conn.pending = conn.pending[1:]
                        self.stats.bytes_sent += 1
                    except BlockingIOError:
                        pass
                    except OSError:
                        alive = False
                if alive:
                    kept.append(conn)
                else:
                    conn.sock.close()
                    self.stats.closed_by_server += 1
            self._conns = kept
            while len(self._conns) < self.count and not self._stop.is_set():
                before = self.stats.opened
                self._open()
                if self.stats.opened == before:
                    break  # refused: try again at the next tick


@dataclass
class ProbeResult:
    status: int | None  # None: no answer (connection error or timeout)
    seconds: float
    error: str = ""


def probe(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict | None = None,
    timeout_s: float = 60,
) -> ProbeResult:
    """One ordinary request on a fresh connection."""
    _check_loopback(host)
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return ProbeResult(response.status, time.monotonic() - started)
    except OSError as exc:
        return ProbeResult(None, time.monotonic() - started, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def probe_predictions(
    host: str, port: int, jpeg: bytes, seconds: float, timeout_s: float, every_s: float = 0.5
) -> list[ProbeResult]:
    """Ordinary JPEG predictions, one every ``every_s``, for ``seconds``: what a patient
    client meets while the slow ones hold their connections."""
    results = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        results.append(
            probe(
                host,
                port,
                "POST",
                "/api/v1/predict",
                jpeg,
                {"Content-Type": "image/jpeg"},
                timeout_s=timeout_s,
            )
        )
        time.sleep(every_s)
    return results
