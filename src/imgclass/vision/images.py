"""Decode and validate uploaded image bytes into an upright RGB ``PIL.Image``.

Everything a hostile or unusual upload can do is decided here: empty input,
formats we do not accept, decompression bombs, truncated or corrupt data, and
every pixel mode Pillow can produce (CMYK, palette, alpha, 16-bit, float).
Large JPEGs are downscaled while decoding (``Image.draft``), which is far
cheaper than decoding at full size and resizing afterwards.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
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
            img.load()
            img = _upright(img)
            rgb = to_rgb(img)
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


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a malformed EXIF block is ignored, not fatal."""
    try:
        if img.getexif().get(EXIF_ORIENTATION, 1) == 1:
            return img  # exif_transpose would return a needless full copy
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # malformed EXIF must not reject an otherwise valid image
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(img)
    return img.convert("RGB")


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float images: rescale to 0-255 instead of clipping."""
    arr = np.asarray(img)
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max()) if arr.size else 0.0
        # Float images are conventionally 0..1; anything else is scaled to its range.
        scale = 255.0 if top <= 1.0 else 255.0 / max(top, 1.0)
        out = np.clip(arr * scale, 0, 255)
    else:
        arr = arr.astype(np.int64)
        top = int(arr.max()) if arr.size else 0
        # 16-bit sources (0..65535) are the common case; 8-bit data stored in a
        # wide mode is left as is.
        out = np.clip(arr, 0, 65535) / 257.0 if top > 255 else np.clip(arr, 0, 255)
    return Image.fromarray(out.astype(np.uint8), mode="L").convert("RGB")
