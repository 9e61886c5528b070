"""Real processes for end-to-end tests: `imgclass serve`, Prometheus, Alertmanager.

Each runs on a free loopback port with its own temporary directories, writes its
output to a log file (a pipe nobody reads could fill up and stall it), and is
stopped by the test that started it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    """Status and body of a GET; an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post_image(base: str, data: bytes, content_type: str = "image/jpeg") -> int:
    """Status of a raw-body predict; an HTTP error status is returned, not raised."""
    req = urllib.request.Request(
        base + "/api/v1/predict", data=data, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Process:
    name: str
    proc: subprocess.Popen
    log_path: Path
    base: str

    @property
    def address(self) -> str:
        return self.base.removeprefix("http://")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self, path: str, status: int = 200, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if http_get(self.base + path, timeout=2)[0] == status:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {path} never answered {status}:\n{self.log()}")
            time.sleep(0.2)

    def stop(self) -> str:
        """Stop the process (SIGTERM; SIGKILL after 30 s) and return its output."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.log()


def spawn(name: str, args: list[str], workdir: Path, env: dict | None = None, base="") -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    return Process(name, proc, log_path, base)


@dataclass
class Imgclass(Process):
    data_dir: Path = Path()
    model_dir: Path = Path()
    metrics_dir: Path | None = None


def start_imgclass(
    workdir: Path,
    model_dir: Path,
    *,
    workers: int = 2,
    data_dir: Path | None = None,
    metrics_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> Imgclass:
    """`imgclass serve` on a free port; call ``wait_until("/readyz")`` (or /healthz) next.

    The metrics directory is ``metrics_dir`` if given, else the server's default; ``env``
    adds to (or overrides) the server's environment.
    """
    port = free_port()
    data_dir = data_dir or workdir / "data"
    extra_env = env or {}
    env = {
        **os.environ,
        "IMGCLASS_DATA_DIR": str(data_dir),
        "IMGCLASS_MODEL_DIR": str(model_dir),
        "IMGCLASS_PORT": str(port),
        "IMGCLASS_WORKERS": str(workers),
    }
    for name in ("IMGCLASS_DATABASE_URL", "IMGCLASS_METRICS_DIR", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    if metrics_dir is not None:
        env["IMGCLASS_METRICS_DIR"] = str(metrics_dir)
    env.update(extra_env)
    imgclass = str(Path(sys.executable).parent / "imgclass")
    process = spawn("imgclass", [imgclass, "serve"], workdir, env, f"http://127.0.0.1:{port}")
    return Imgclass(
        **vars(process), data_dir=data_dir, model_dir=model_dir, metrics_dir=metrics_dir
    )


def start_prometheus(binary: str, config: Path, workdir: Path) -> Process:
    port = free_port()
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--rules.alert.resend-delay=1s",
    ]
    process = spawn("prometheus", args, workdir, base=f"http://127.0.0.1:{port}")
    process.wait_until("/-/ready", timeout=60)
    return process


def start_alertmanager(binary: str, config: Path, workdir: Path) -> Process:
    port = free_port()
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # a single instance: no gossip port
    ]
    process = spawn("alertmanager", args, workdir, base=f"http://127.0.0.1:{port}")
    process.wait_until("/-/ready", timeout=60)
    return process
