"""Run deploy/nginx/nginx.conf with Debian's nginx in front of local replicas.

The config is used as shipped: a run directory gets a copy of it plus the two files it
includes (``upstream-servers.conf``, ``listen.conf``), and nginx runs in the foreground
with that directory as its prefix (pid file, temp files) — the way a local cluster runs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts.cluster import NGINX_DIR, NGINX_SERVER_PARAMS, write_nginx_dir
from tests.support.system import require_binary

__all__ = ["NGINX_DIR", "check_config", "free_port", "running_nginx", "write_run_dir"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def write_run_dir(
    upstreams: list[str], listen: str, *, server_params: str = NGINX_SERVER_PARAMS
) -> Path:
    """A fresh run directory: nginx.conf as shipped, our replicas, our listen address.

    Written the way `make cluster` writes its own (world-traversable: mkdtemp's 0700 would
    lock nginx's unprivileged workers out of their temp files when the tests run as root).
    """
    run_dir = Path(tempfile.mkdtemp(prefix="imgclass-nginx-"))
    return write_nginx_dir(run_dir, upstreams, listen, server_params)


def nginx_command(run_dir: Path, *extra: str) -> list[str]:
    nginx = require_binary("nginx", "nginx")
    return [nginx, "-p", f"{run_dir}/", "-c", str(run_dir / "nginx.conf"), *extra]


def check_config(run_dir: Path) -> subprocess.CompletedProcess:
    """``nginx -t`` on the run directory's config."""
    return subprocess.run(nginx_command(run_dir, "-t"), capture_output=True, text=True)


def _wait_listening(host: str, port: int, proc: subprocess.Popen, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nginx did not listen on {host}:{port}")


@contextmanager
def running_nginx(run_dir: Path, host: str, port: int) -> Iterator[Path]:
    """nginx in the foreground; yields the access log (JSON lines, nginx's stdout)."""
    access_log = run_dir / "access.log"
    with open(access_log, "wb") as out, open(run_dir / "error.log", "wb") as err:
        proc = subprocess.Popen(nginx_command(run_dir, "-g", "daemon off;"), stdout=out, stderr=err)
    try:
        try:
            _wait_listening(host, port, proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{(run_dir / 'error.log').read_text()}") from exc
        yield access_log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


def env_without_imgclass() -> dict[str, str]:
    """The test process's environment minus any IMGCLASS_* a developer may have set."""
    return {k: v for k, v in os.environ.items() if not k.startswith("IMGCLASS_")}
