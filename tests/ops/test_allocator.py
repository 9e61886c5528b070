"""Workers give big freed buffers back to the system (a fixed glibc mmap threshold).

With glibc's default, the mmap threshold rises to the size of the largest block freed, and
later buffers of a few MB (decoded images, NumPy arrays) are carved from the arenas of the
worker's threads, where they stay after the request: the worker's RSS only grows.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import urllib.request

import pytest

from tests.support.server import Server
from tests.vision.test_decode_memory import MAKE

pytestmark = pytest.mark.slow

CHURN = textwrap.dedent(
    """
    import sys, threading
    import numpy as np
    from imgclass.ops.allocator import fix_mmap_threshold
    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    if sys.argv[1] == "fixed":
        assert fix_mmap_threshold()
    before = rss_mb()
    def work():
        for _ in range(20):
            big = np.ones(20_000_000 // 8)  # freed: the dynamic threshold rises to 20 MB
            del big
            buffers = [np.ones(2_000_000 // 8) for _ in range(40)]  # 80 MB in 2 MB arrays
            del buffers
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(rss_mb() - before)
    """
)


def held_after_churn(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True
    )
    return float(out.stdout)


def test_a_fixed_mmap_threshold_gives_freed_buffers_back():
    assert held_after_churn("default") > 100  # what glibc does on its own (MB kept)
    assert held_after_churn("fixed") < 20


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def post(base: str, data: bytes, content_type: str) -> int:
    req = urllib.request.Request(
        base + "/api/v1/predict", data=data, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.status


def test_a_worker_returns_to_its_size_after_huge_images(tmp_path, model_dir, cat_jpeg):
    subprocess.run([sys.executable, "-c", MAKE, str(tmp_path)], check=True)
    huge = (tmp_path / "alpha.png").read_bytes()  # 7000x7000 RGBA: 196 MB decoded
    server = Server(tmp_path / "data", model_dir, {"workers": "1", "cache_entries": "0"})
    server.start()
    try:
        server.wait_ready()
        for _ in range(5):
            assert post(server.base, cat_jpeg, "image/jpeg") == 200
        (worker,) = server.workers()
        settled = rss_mb(worker)
        for _ in range(3):
            assert post(server.base, huge, "image/png") == 200
        for _ in range(5):
            assert post(server.base, cat_jpeg, "image/jpeg") == 200
        grown = rss_mb(worker) - settled
        print(f"worker grew {grown:.1f} MB")
        assert grown < 60
    finally:
        server.stop()
