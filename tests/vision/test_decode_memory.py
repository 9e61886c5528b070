"""A small upload that decodes to a huge image keeps a worker's memory bounded.

Pixel limits count pixels, not bytes: a 7000x7000 RGBA PNG or 16-bit TIFF is a few hundred
KB on the wire and hundreds of MB decoded, and every full-size copy made while converting it
(EXIF rotation, mode conversion, alpha compositing, int64/float64 temporaries) added as much
again: one such upload held 1-1.4 GB. Each case runs in a fresh process, which reports its
peak RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

MAKE = textwrap.dedent(
    """
    import sys
    import numpy as np
    from PIL import Image
    out, n = sys.argv[1], 7000
    tile = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 997 % 65536).astype(np.uint16)
    Image.fromarray(np.tile(tile, (n // 64 + 1, n // 64 + 1))[:n, :n]).save(
        out + "/deep.tif", compression="tiff_deflate"
    )
    rgba = np.zeros((n, n, 4), np.uint8)
    rgba[..., 0] = (np.arange(n) % 256)[None, :]
    rgba[..., 3] = 200
    Image.fromarray(rgba).save(out + "/alpha.png", compress_level=9)
    """
)

LOAD = textwrap.dedent(
    """
    import json, resource, sys, threading
    from imgclass.vision.images import load_image
    paths, copies = sys.argv[1].split(","), int(sys.argv[2])
    blobs = [open(p, "rb").read() for p in paths]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = []
    def one(data):
        img = load_image(data, max_pixels=50_000_000, min_short_side=256)
        results.append((img.width, img.height, img.image.mode, min(img.image.size)))
    threads = [threading.Thread(target=one, args=(b,)) for b in blobs for _ in range(copies)]
    for t in threads: t.start()
    for t in threads: t.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"grew_mb": (peak - before) / 1024, "results": results}))
    """
)


@pytest.fixture(scope="module")
def huge_images(tmp_path_factory):
    out = tmp_path_factory.mktemp("huge")
    subprocess.run([sys.executable, "-c", MAKE, str(out)], check=True)
    return {"deep": out / "deep.tif", "alpha": out / "alpha.png"}


def peak_growth(paths, copies: int = 1) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", LOAD, ",".join(map(str, paths)), str(copies)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize("case", ["deep", "alpha"])
def test_one_huge_image_is_decoded_within_bounded_memory(huge_images, case):
    path = huge_images[case]
    assert path.stat().st_size < 2_000_000  # a small upload
    report = peak_growth([path])
    # Decoded, the image itself is 98 MB (16-bit) or 196 MB (RGBA); conversions used to
    # add four to five times that.
    assert report["grew_mb"] < 450, report
    ((width, height, mode, short_side),) = report["results"]
    assert (width, height, mode) == (7000, 7000, "RGB")
    assert 256 <= short_side <= 1024  # shrunk early, still enough for the model


def test_concurrent_huge_images_take_turns(huge_images):
    # Four threads (a worker's) decoding huge images at once: one large decode at a time.
    report = peak_growth([huge_images["alpha"]], copies=4)
    assert len(report["results"]) == 4
    assert report["grew_mb"] < 600, report
