"""The machine's limit: bare model images/s and decode+model images/s.

One process per core, each with a one-thread ONNX Runtime session (the same
layout `imgclass serve` uses), batch size 1, for a fixed duration.

    python -m bench.model_speed [--seconds 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

from bench.common import REPO, jpeg_640x480
from imgclass.config import available_cpus
from imgclass.vision.classifier import OnnxClassifier, model_path
from imgclass.vision.images import load_image
from imgclass.vision.preprocess import to_tensor


def _worker(mode: str, seconds: float, jpeg: bytes, out) -> None:
    clf = OnnxClassifier(model_path(REPO / "models", "efficientnet-lite0", "fp32"), threads=1)
    prep = clf.preprocessing
    tensor = to_tensor(load_image(jpeg, max_pixels=10**8).image, prep)[None]
    clf.logits(tensor)  # warm-up
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        if mode == "decode+model":
            image = load_image(jpeg, max_pixels=10**8, min_short_side=prep.resize_short)
            tensor = to_tensor(image.image, prep)[None]
        clf.logits(tensor)
        done += 1
    out.put(done)


def images_per_second(mode: str, seconds: float, jpeg: bytes, processes: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(mode, seconds, jpeg, queue)) for _ in range(processes)
    ]
    for p in procs:
        p.start()
    total = sum(queue.get() for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def measure(seconds: float = 10.0, images: dict[str, bytes] | None = None) -> dict[str, float]:
    """images/s of the bare model, and of decode+model for each image."""
    images = images or {"640x480 JPEG": jpeg_640x480()}
    cpus = available_cpus()
    first = next(iter(images.values()))
    rates = {"model": images_per_second("model", seconds, first, cpus)}
    for name, data in images.items():
        rates[f"decode+model {name}"] = images_per_second("decode+model", seconds, data, cpus)
    return rates


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    for mode, rate in measure(args.seconds).items():
        print(f"{mode:>14}: {rate:7.1f} images/s ({available_cpus()} processes x 1 thread)")
