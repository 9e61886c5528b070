"""Decode and validate uploaded image bytes into an upright RGB ``PIL.Image``.

Everything a hostile or unusual upload can do is decided here: empty input,
formats we do not accept, decompression bombs, truncated or corrupt data, and
every pixel mode Pillow can produce (CMYK, palette, alpha, 16-bit, float).
Large JPEGs are downscaled while decoding (``Image.draft``), which is far
cheaper than decoding at full size and resizing afterwards. Other large images
are box-averaged right after decoding, before any conversion copies them, and
only one image that decodes to more than ``LARGE_DECODE_BYTES`` is decoded at a
time per process: the pixel limit bounds pixels, not the bytes they take.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imgclass.errors import BadRequest, ImageRejected, UnsupportedImage

log = logging.getLogger(__name__)

# Pillow's own bomb guard raises inside Image.open, before the size is known;
# load_image enforces the configured limit itself (always before decoding), so
# it can name the image's dimensions and honour a limit above Pillow's default.
Image.MAX_IMAGE_PIXELS = None

EXIF_ORIENTATION = 0x0112

# Formats we accept. Restricting Image.open to these keeps Pillow's rarer
# (and less battle-tested) decoders away from untrusted input.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

# Errors Pillow's decoders raise on broken data. Any of them means the upload
# claimed to be an image but is not a valid one.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError)


# Leading bytes of each accepted format (WebP also has "WEBP" at offset 8).
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff_format(data: bytes) -> str | None:
    """The accepted format ``data`` claims to be by its signature, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


@dataclass(frozen=True)
class DecodedImage:
    """An upload turned into an RGB image, plus what the warehouse records about it."""

    image: Image.Image  # RGB, EXIF orientation applied, possibly downscaled by draft
    width: int  # as uploaded (after orientation), before any downscaling
    height: int
    format: str
    n_bytes: int
    sha256: str


def content_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_image(
    data: bytes,
    *,
    max_pixels: int,
    min_short_side: int | None = None,
    sha256: str | None = None,
) -> DecodedImage:
    """Decode ``data`` into an upright RGB image or raise a typed, user-facing error.

    ``min_short_side``: the smallest short side the caller needs; JPEGs larger
    than that are decoded at a reduced scale (1/2, 1/4, 1/8) that still covers it.
    """
    if not data:
        raise BadRequest("the uploaded file is empty", code="empty_file")
    sha = sha256 or content_sha256(data)  # the caller may have hashed it already (cache key)
    with warnings.catch_warnings():
        # Pillow warns (rather than raises) about oversized images and odd
        # metadata; our own checks below decide, so keep warnings out of logs.
        warnings.simplefilter("ignore")
        try:
            img = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
        except Image.DecompressionBombError as exc:
            raise _too_large(None, max_pixels) from exc
        except UnidentifiedImageError as exc:
            if sniff_format(data):
                # It starts like one of our formats, so it is a broken image, not a wrong type.
                raise ImageRejected(f"the {sniff_format(data)} data is corrupt") from exc
            raise UnsupportedImage(
                "the file is not a supported image; send JPEG, PNG, GIF, WebP, BMP or TIFF"
            ) from exc
        except _DECODE_ERRORS as exc:
            raise ImageRejected(f"the image header is corrupt ({_reason(exc)})") from exc

        fmt = img.format or "unknown"
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageRejected("the image has no pixels")
        if width * height > max_pixels:
            raise _too_large((width, height), max_pixels)

        try:
            if fmt == "JPEG" and min_short_side:
                # Decode at the smallest DCT scale whose size still covers
                # min_short_side on both axes.
                img.draft(None, (min_short_side, min_short_side))
            with _decode_slot(img):
                img.load()
                img = _shrink(img, min_short_side)
                img = _upright(img)
                rgb = to_rgb(img, min_short_side)
        except Image.DecompressionBombError as exc:
            raise _too_large((width, height), max_pixels) from exc
        except _DECODE_ERRORS as exc:
            raise ImageRejected(f"the image data is corrupt or truncated ({_reason(exc)})") from exc

    if orientation_swapped(img, width, height):
        width, height = height, width
    return DecodedImage(rgb, width, height, fmt, len(data), sha)


def orientation_swapped(oriented: Image.Image, width: int, height: int) -> bool:
    """True when EXIF orientation turned the image by 90 degrees (so w/h swap)."""
    ow, oh = oriented.size
    return width != height and (ow > oh) != (width > height)


def _too_large(size: tuple[int, int] | None, max_pixels: int) -> ImageRejected:
    what = f"{size[0]}x{size[1]} pixels" if size else "too many pixels"
    return ImageRejected(
        f"the image is too large: {what}, the limit is {max_pixels:,} pixels",
        code="image_too_large",
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


# A decoded image larger than this waits for the process's one large-decode slot: a small
# upload can decode to hundreds of MB (pixels x bytes per pixel), and several at once in one
# worker's threads would add up; ordinary photos (a 12 MP JPEG decodes at 1/8 scale) never wait.
LARGE_DECODE_BYTES = 64 * 1024 * 1024
_large_decodes = threading.BoundedSemaphore(1)


@contextlib.contextmanager
def _decode_slot(img: Image.Image) -> Iterator[None]:
    width, height = img.size
    if width * height * _bytes_per_pixel(img.mode) <= LARGE_DECODE_BYTES:
        yield
        return
    with _large_decodes:
        yield


def _bytes_per_pixel(mode: str) -> int:
    # Pillow stores every multi-band mode in 4 bytes per pixel, "I" and "F" too.
    return {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}.get(mode, 4)


# Modes whose pixels Image.reduce can average (not palette indices, 1-bit or 16-bit ints).
_REDUCIBLE = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr", "I", "F"})


def _reduce_factor(size: tuple[int, int], min_short_side: int | None) -> int:
    """The integer downscale that keeps the short side at least ``min_short_side``."""
    return min(size) // min_short_side if min_short_side else 1


def _shrink(img: Image.Image, min_short_side: int | None) -> Image.Image:
    """Box-average a large decoded image down to about twice the size the model needs.

    Done first, on the decoded pixels, so that every later step (EXIF rotation, mode
    conversion, alpha compositing) works on a small image: at full size each of them made
    another copy, and a 7000x7000 RGBA PNG of 200 KB held about 1 GB while it was converted.
    Modes that cannot be averaged are shrunk by ``to_rgb`` (16-bit) or after conversion.
    """
    factor = _reduce_factor(img.size, min_short_side) // 2
    if factor < 2 or img.mode not in _REDUCIBLE:
        return img
    return img.reduce(factor)


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a malformed EXIF block is ignored, not fatal."""
    try:
        if img.getexif().get(EXIF_ORIENTATION, 1) == 1:
            return img  # exif_transpose would return a needless full copy
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # malformed EXIF must not reject an otherwise valid image
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return img


def to_rgb(img: Image.Image, min_short_side: int | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white.

    With ``min_short_side``, images still large after ``_shrink`` (palette and 16-bit ones,
    which it cannot average) are shrunk as soon as they are in a mode that can be.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = _shrink(img.convert("RGBA" if "transparency" in img.info else "RGB"), min_short_side)
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(img, min_short_side)
    return img.convert("RGB")


def _high_depth_to_rgb(img: Image.Image, min_short_side: int | None = None) -> Image.Image:
    """16-bit, 32-bit integer and float images: rescale to 0-255 instead of clipping.

    Works on a box-averaged float32 copy when the image is large (``_block_mean``), so the
    temporaries are small; the scale still comes from the full image's range.
    """
    arr = np.asarray(img)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        top = float(arr.max(where=finite, initial=0.0)) if arr.size else 0.0
        # Float images are conventionally 0..1; anything else is scaled to its range.
        scale = 255.0 if top <= 1.0 else 255.0 / max(top, 1.0)
        if not finite.all():
            arr = np.where(finite, arr, 0)
        low, high = 0.0, 255.0 / scale
    else:
        top = int(arr.max()) if arr.size else 0
        # 16-bit sources (0..65535) are the common case; 8-bit data stored in a
        # wide mode is left as is.
        scale = 1 / 257.0 if top > 255 else 1.0
        low, high = 0, 65535 if top > 255 else 255
    small = _block_mean(arr, _reduce_factor(arr.shape[::-1], min_short_side) // 2)
    np.clip(small, low, high, out=small)
    small *= scale
    return Image.fromarray(small.astype(np.uint8), mode="L").convert("RGB")


def _block_mean(arr: np.ndarray, factor: int) -> np.ndarray:
    """float32 means of ``factor`` x ``factor`` blocks (what Image.reduce does), or a copy."""
    if factor < 2:
        return arr.astype(np.float32)
    h, w = (arr.shape[0] // factor) * factor, (arr.shape[1] // factor) * factor
    blocks = arr[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float32)
