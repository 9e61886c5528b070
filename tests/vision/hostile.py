"""Generators for malformed and unusual image files, built in code from real photos."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_bomb(side: int = 30000) -> bytes:
    """A real side x side 8-bit grayscale PNG of zeros: tiny file, side**2 pixels."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    rows_per_chunk = 1000
    parts = []
    for start in range(0, side, rows_per_chunk):
        parts.append(compressor.compress(row * min(rows_per_chunk, side - start)))
    parts.append(compressor.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def exif_rotated_jpeg(upright: Image.Image) -> bytes:
    """The photo stored turned 90 degrees counter-clockwise, with EXIF Orientation=6
    ("rotate 90 clockwise to display"), as phone cameras write it."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def animated_gif(frames: list[Image.Image]) -> bytes:
    buf = io.BytesIO()
    first, *rest = [f.convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]
    first.save(buf, "GIF", save_all=True, append_images=rest, duration=100, loop=0)
    return buf.getvalue()
