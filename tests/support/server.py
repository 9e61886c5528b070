"""A real ``imgclass serve`` on a free port: ``serve`` for browser tests and the screenshot
script, ``Server`` (its own process group, restartable) for the fault and soak tests."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def imgclass_command(*args: str) -> list[str]:
    """The venv's ``imgclass`` entry point with ``args``."""
    return [str(Path(sys.executable).parent / "imgclass"), *args]


def environment(data_dir: Path, model_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a server on ``data_dir``: this one's, without its IMGCLASS_DATABASE_URL
    (a test's server keeps its own SQLite file unless ``extra`` names a database)."""
    env = {k: v for k, v in os.environ.items() if k != "IMGCLASS_DATABASE_URL"}
    env.update(IMGCLASS_DATA_DIR=str(data_dir), IMGCLASS_MODEL_DIR=str(model_dir))
    env.update({f"IMGCLASS_{name.upper()}": value for name, value in extra.items()})
    return env


@contextmanager
def serve(data_dir: Path, model_dir: Path, workers: int = 1, **extra: str) -> Iterator[str]:
    """Run ``imgclass serve`` until the block ends; yield its base URL once it is ready.

    Its output goes to ``<data_dir>/../serve.log``, so a failure can be read afterwards.
    """
    port = free_port()
    env = environment(data_dir, model_dir, port=str(port), workers=str(workers), **extra)
    log_path = data_dir.parent / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            imgclass_command("serve"), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"imgclass serve exited:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"imgclass serve did not get ready:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Server:
    """``imgclass serve`` in its own process group, so the whole server can be SIGKILLed.

    It keeps its port across ``stop``/``start``, so a restart is the same server to its
    clients. ``settings`` are extra IMGCLASS_* variables (lower-case names, e.g.
    ``{"cache_entries": "0"}``); 2 workers unless they say otherwise. Output goes to
    ``log_path`` if given (never onto a disk a test fills up), else nowhere.
    """

    data_dir: Path
    model_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = environment(
            self.data_dir,
            self.model_dir,
            **{"workers": "2", **self.settings, "port": str(self.port)},
        )
        with open(self.log_path or os.devnull, "ab") as log:
            self.proc = subprocess.Popen(
                imgclass_command("serve"),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready()

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.readyz() == 200:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"imgclass serve exited with {self.proc.returncode}")
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
        """The gunicorn workers' pids (children of the master, which is ``proc``)."""
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
