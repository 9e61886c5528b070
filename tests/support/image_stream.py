"""Streams of real and generated images for drift tests, driven through the real predict path.

Each image is a random crop of a photo that ships with scikit-image, resized to
a random size, its brightness scaled, saved as JPEG, PNG or WebP. A stream is
reproducible from its seed; two seeds give two different samples of the same
distribution, and the keyword arguments shift one property (darker images,
only one photo, …) to make a drifted stream.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageEnhance
from skimage import data as skdata

# Photos bundled with scikit-image (no download): colour and grayscale, varied subjects.
PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "brick",
    "grass",
    "moon",
)
FORMATS = ("JPEG", "PNG", "WEBP")
FORMAT_SHARES = (0.6, 0.25, 0.15)
BATCH = 16  # files per predict request (the default per-request limit)


@lru_cache(maxsize=1)
def photos() -> dict[str, Image.Image]:
    return {name: Image.fromarray(getattr(skdata, name)()).convert("RGB") for name in PHOTOS}


def image_stream(
    count: int,
    seed: int,
    *,
    brightness: tuple[float, float] = (0.7, 1.3),
    sources: Sequence[str] = PHOTOS,
    sizes: tuple[int, int] = (224, 640),
) -> list[tuple[str, bytes]]:
    """``count`` (filename, encoded bytes) pairs drawn from one distribution."""
    rng = np.random.default_rng(seed)
    library = photos()
    stream = []
    for i in range(count):
        src = library[sources[rng.integers(len(sources))]]
        width, height = src.size
        crop_w = int(width * rng.uniform(0.5, 1.0))
        crop_h = int(height * rng.uniform(0.5, 1.0))
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        size = (
            int(rng.integers(sizes[0], sizes[1] + 1)),
            int(rng.integers(sizes[0], sizes[1] + 1)),
        )
        img = src.crop((left, top, left + crop_w, top + crop_h)).resize(
            size, Image.Resampling.BILINEAR
        )
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(*brightness))
        fmt = FORMATS[rng.choice(len(FORMATS), p=FORMAT_SHARES)]
        buf = io.BytesIO()
        img.save(buf, fmt, **({"compress_level": 1} if fmt == "PNG" else {"quality": 90}))
        stream.append((f"s{seed}-{i}.{fmt.lower()}", buf.getvalue()))
    return stream


def post_stream(client, stream: list[tuple[str, bytes]], *, headers=None) -> list[str]:
    """Classify the stream through ``POST /api/v1/predict``, BATCH files a request; the ids."""
    request_ids = []
    for start in range(0, len(stream), BATCH):
        chunk = stream[start : start + BATCH]
        resp = client.post(
            "/api/v1/predict?top_k=1",
            data={"image": [(io.BytesIO(content), name) for name, content in chunk]},
            content_type="multipart/form-data",
            headers=headers or {},
        )
        assert resp.status_code == 200, resp.get_json()
        request_ids.append(resp.get_json()["request_id"])
    return request_ids
