"""Helpers shared by the benchmarks: test images and a served instance of imgclass."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from PIL import Image
from skimage import data as skdata

REPO = Path(__file__).resolve().parents[1]


def encoded(size: tuple[int, int], fmt: str) -> bytes:
    """The coffee photo resized to ``size`` and encoded as ``fmt``."""
    buf = io.BytesIO()
    image = Image.fromarray(skdata.coffee()).resize(size, Image.Resampling.BICUBIC)
    image.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def jpeg_640x480() -> bytes:
    """A typical web upload."""
    return encoded((640, 480), "JPEG")


# The benchmark's test images: name -> bytes.
def test_images() -> dict[str, bytes]:
    return {
        "640x480 JPEG": jpeg_640x480(),
        "4032x3024 JPEG": encoded((4032, 3024), "JPEG"),
        "640x480 PNG": encoded((640, 480), "PNG"),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start") from None
            time.sleep(0.2)


@contextmanager
def served_baseline(workers: int):
    """The tutorial-style baseline (bench/baseline_app.py) under gunicorn sync workers.

    Tuned like imgclass (one worker per CPU, one torch thread each): with torch's
    default threads, 2 workers x 2 threads on 2 cores collapsed to 1.5 requests/s,
    and comparing against that would flatter us.
    """
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "BASELINE_DB": str(Path(tmp) / "baseline.db"), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "-w",
                str(workers),
                "-b",
                f"127.0.0.1:{port}",
                "--timeout",
                "120",
                "bench.baseline_app:app",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(30)


@contextmanager
def served(workers: int | None = None, threads: int | None = None, **settings: str):
    """Run `imgclass serve` on a free port with a throwaway data dir; yield its base URL.

    ``settings``: extra IMGCLASS_* variables, e.g. ``CACHE_ENTRIES="0"``.
    """
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "IMGCLASS_DATA_DIR": tmp, "IMGCLASS_PORT": str(port)}
        # wrk sends hundreds of requests a second from one address: lift the rate limits.
        env.update(IMGCLASS_RATE_LIMIT_PER_IP="", IMGCLASS_RATE_LIMIT_PER_KEY="")
        env.update({f"IMGCLASS_{name}": value for name, value in settings.items()})
        env.setdefault("IMGCLASS_MODEL_DIR", str(REPO / "models"))
        if workers:
            env["IMGCLASS_WORKERS"] = str(workers)
        if threads:
            env["IMGCLASS_THREADS"] = str(threads)
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "imgclass"), "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(base + "/readyz", timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("server did not start") from None
                    time.sleep(0.2)
            yield base, Path(tmp)
        finally:
            proc.terminate()
            proc.wait(30)
