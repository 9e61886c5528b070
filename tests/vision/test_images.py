"""Decoding and validation of uploads: every mode becomes RGB, every bad input a typed error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imgclass.errors import BadRequest, ImageRejected, UnsupportedImage
from imgclass.vision.images import load_image
from tests.conftest import jpeg_bytes, png_bytes
from tests.vision.hostile import animated_gif, exif_rotated_jpeg, png_bomb

LIMIT = 50_000_000


def load(data: bytes, **kw):
    return load_image(data, max_pixels=kw.pop("max_pixels", LIMIT), **kw)


def test_jpeg_decodes_to_rgb_with_its_facts(photos, cat_jpeg):
    decoded = load(cat_jpeg)
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == photos["chelsea"].size
    assert decoded.format == "JPEG"
    assert decoded.n_bytes == len(cat_jpeg)
    assert len(decoded.sha256) == 64


def test_zero_bytes_is_an_empty_file():
    with pytest.raises(BadRequest) as err:
        load(b"")
    assert err.value.code == "empty_file" and err.value.status == 400


@pytest.mark.parametrize(
    "payload",
    [
        b"hello, this is a text file named cat.jpg\n" * 10,
        b"<html><body>not an image</body></html>",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
    ],
    ids=["text", "html", "svg", "pdf"],
)
def test_non_images_are_unsupported(payload):
    with pytest.raises(UnsupportedImage) as err:
        load(payload)
    assert err.value.status == 415


def test_formats_outside_the_allowlist_are_unsupported(photos):
    buf = io.BytesIO()
    photos["chelsea"].resize((64, 64)).save(buf, "ICO")
    with pytest.raises(UnsupportedImage):
        load(buf.getvalue())


def test_truncated_jpeg_is_corrupt(cat_jpeg):
    with pytest.raises(ImageRejected) as err:
        load(cat_jpeg[: len(cat_jpeg) // 2])
    assert err.value.status == 422 and err.value.code == "corrupt_image"


def test_png_with_broken_checksum_is_corrupt(photos):
    data = bytearray(png_bytes(photos["chelsea"]))
    data[40:48] = b"\xff" * 8  # inside the first IDAT chunk
    with pytest.raises(ImageRejected) as err:
        load(bytes(data))
    assert err.value.status == 422


def test_png_bomb_is_refused_before_decoding():
    bomb = png_bomb(30000)
    assert len(bomb) < 2_000_000  # a tiny file…
    with pytest.raises(ImageRejected) as err:
        load(bomb)
    assert err.value.code == "image_too_large" and err.value.status == 422
    assert "30000x30000" in err.value.message


def test_pixel_limit_is_configurable(cat_jpeg):
    with pytest.raises(ImageRejected) as err:
        load(cat_jpeg, max_pixels=1000)
    assert err.value.code == "image_too_large"


def test_cmyk_jpeg_becomes_rgb(photos):
    cmyk = jpeg_bytes(photos["chelsea"].convert("CMYK"))
    decoded = load(cmyk)
    assert decoded.image.mode == "RGB"
    reference = np.asarray(photos["chelsea"], dtype=np.int16)
    assert np.abs(np.asarray(decoded.image, dtype=np.int16) - reference).mean() < 12


def test_16_bit_png_is_rescaled_not_clipped(photos):
    gray8 = np.asarray(photos["chelsea"].convert("L"))
    gray16 = gray8.astype(np.uint16) * 257
    data = png_bytes(Image.fromarray(gray16))
    decoded = load(data)
    assert decoded.image.mode == "RGB"
    out = np.asarray(decoded.image)[:, :, 0].astype(np.int16)
    assert np.abs(out - gray8).max() <= 1  # clipping would have made it white


def test_float_tiff_becomes_rgb(photos):
    gray = np.asarray(photos["chelsea"].convert("L"), dtype=np.float32) / 255.0
    buf = io.BytesIO()
    Image.fromarray(gray, mode="F").save(buf, "TIFF")
    decoded = load(buf.getvalue())
    assert decoded.image.mode == "RGB" and decoded.format == "TIFF"
    assert abs(np.asarray(decoded.image)[:, :, 0].mean() - gray.mean() * 255) < 1.5


@pytest.mark.parametrize("mode", ["L", "1", "P", "LA", "RGBA", "I"])
def test_other_modes_become_rgb(photos, mode):
    img = photos["chelsea"].convert(mode)
    buf = io.BytesIO()
    img.save(buf, "TIFF" if mode == "I" else "PNG")  # PNG cannot hold 32-bit integers
    decoded = load(buf.getvalue())
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == img.size


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    decoded = load(png_bytes(clear))
    assert np.asarray(decoded.image).min() == 255


def test_animated_gif_uses_its_first_frame(photos):
    cat = photos["chelsea"]
    noise = Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (*cat.size[::-1], 3), dtype=np.uint8)
    )
    decoded = load(animated_gif([cat, noise, noise]))
    assert decoded.format == "GIF" and decoded.image.mode == "RGB"
    first = np.asarray(cat, dtype=np.int16)
    assert np.abs(np.asarray(decoded.image, dtype=np.int16) - first).mean() < 20


def test_exif_orientation_is_applied(photos):
    upright = photos["chelsea"]
    decoded = load(exif_rotated_jpeg(upright))
    assert decoded.image.size == upright.size
    assert (decoded.width, decoded.height) == upright.size
    diff = np.abs(np.asarray(decoded.image, dtype=np.int16) - np.asarray(upright, dtype=np.int16))
    assert diff.mean() < 8


def test_large_jpeg_is_downscaled_while_decoding(photos):
    big = photos["coffee"].resize((4032, 3024))
    decoded = load(jpeg_bytes(big), min_short_side=256)
    assert (decoded.width, decoded.height) == (4032, 3024)  # facts describe the upload
    assert min(decoded.image.size) >= 256
    assert decoded.image.size[0] <= 4032 // 8 * 2  # decoded at a reduced DCT scale


def test_extreme_aspect_ratio_and_tiny_images_decode():
    for size in [(1, 10000), (10000, 1), (1, 1)]:
        decoded = load(png_bytes(Image.new("RGB", size, (10, 200, 30))))
        assert decoded.image.size == size


def test_brightness_from_the_tensor_matches_pillow_luma():
    from imgclass.vision.preprocess import Preprocessing, brightness, to_tensor

    prep = Preprocessing()
    rng = np.random.default_rng(7)
    for level in (0, 40, 128, 250):
        pixels = np.clip(rng.normal(level, 20, (300, 400, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        tensor = to_tensor(image, prep)
        crop = ((tensor.transpose(1, 2, 0) * prep.std) + prep.mean).round().astype(np.uint8)
        expected = np.asarray(Image.fromarray(crop).convert("L"), dtype=np.float64).mean()
        assert abs(brightness(tensor, prep) - expected) < 1.0
