"""A real ``imgclass serve`` on a free port, for browser tests and the screenshot script."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def imgclass_command(*args: str) -> list[str]:
    """The venv's ``imgclass`` entry point with ``args``."""
    return [str(Path(sys.executable).parent / "imgclass"), *args]


def environment(data_dir: Path, model_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "IMGCLASS_DATA_DIR": str(data_dir),
        "IMGCLASS_MODEL_DIR": str(model_dir),
        **{f"IMGCLASS_{name.upper()}": value for name, value in extra.items()},
    }
    env.pop("IMGCLASS_DATABASE_URL", None)
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
