"""int8 against fp32: agreement on held-out photos and single-thread speed.

Held-out: augmented crops of scikit-image photos that calibration never saw
(imgclass.vision.quantize.HELD_OUT_PHOTOS).

    python -m bench.int8_eval [--seconds 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import REPO
from imgclass.vision.classifier import OnnxClassifier, model_path
from imgclass.vision.quantize import HELD_OUT_PHOTOS, held_out_tensors


def agreement(fp32: OnnxClassifier, int8: OnnxClassifier) -> dict[str, float]:
    batch = np.concatenate(held_out_tensors(fp32.preprocessing))
    a, b = fp32.logits(batch), int8.logits(batch)
    top1 = float(np.mean(a.argmax(1) == b.argmax(1)))
    pairs = list(zip(a, b, strict=True))
    top5 = float(np.mean([set(np.argsort(-x)[:5]) == set(np.argsort(-y)[:5]) for x, y in pairs]))
    within = float(np.mean([x.argmax() in np.argsort(-y)[:5] for x, y in pairs]))
    return {
        "images": len(batch),
        "top1": top1,
        "top5_same_set": top5,
        "fp32_top1_in_int8_top5": within,
    }


def images_per_second(clf: OnnxClassifier, seconds: float) -> float:
    x = held_out_tensors(clf.preprocessing, per_photo=1)[0]
    for _ in range(20):
        clf.logits(x)
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        clf.logits(x)
        done += 1
    return done / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    fp32 = OnnxClassifier(model_path(REPO / "models", "efficientnet-lite0", "fp32"), threads=1)
    int8 = OnnxClassifier(model_path(REPO / "models", "efficientnet-lite0", "int8"), threads=1)
    agree = agreement(fp32, int8)
    print(f"held-out photos: {', '.join(HELD_OUT_PHOTOS)} ({agree['images']} images with crops)")
    print(
        f"top-1 agreement {agree['top1']:.1%}, same top-5 set {agree['top5_same_set']:.1%}, "
        f"fp32 top-1 within int8 top-5 {agree['fp32_top1_in_int8_top5']:.1%}"
    )
    f, i = images_per_second(fp32, args.seconds), images_per_second(int8, args.seconds)
    print(f"single thread, batch 1: fp32 {f:.1f}/s, int8 {i:.1f}/s, speed-up {i / f:.2f}x")


if __name__ == "__main__":
    main()
