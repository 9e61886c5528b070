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


def jpeg_640x480() -> bytes:
    """The coffee photo at 640x480, a typical web upload."""
    buf = io.BytesIO()
    Image.fromarray(skdata.coffee()).resize((640, 480)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(workers: int | None = None, threads: int | None = None):
    """Run `imgclass serve` on a free port with a throwaway data dir; yield its base URL."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "IMGCLASS_DATA_DIR": tmp, "IMGCLASS_PORT": str(port)}
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
