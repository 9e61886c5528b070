"""The hostile-input corpus: every case built in code, each with the answer it must get.

``CASES`` maps a name to (bytes, filename, expected status, expected error code or None).
Real photos come from scikit-image; every malformed file is derived from them or written
byte by byte, so the corpus documents exactly what each attack is.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage import data as skdata

from tests.vision.hostile import animated_gif, png_bomb, png_chunk


@dataclass(frozen=True)
class Case:
    content: bytes
    filename: str
    status: int
    code: str | None  # None for a 200


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _cat() -> Image.Image:
    return Image.fromarray(skdata.chelsea())


def _flip_bytes(data: bytes, start: int, count: int = 64) -> bytes:
    """The file with ``count`` bytes from ``start`` inverted: a corrupted body."""
    body = bytearray(data)
    for i in range(start, min(start + count, len(body))):
        body[i] ^= 0xFF
    return bytes(body)


def jpeg_with_dimensions(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF header claims other dimensions (a header bomb)."""
    data = bytearray(_save(Image.new("RGB", (16, 16), "gray"), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_bomb(side: int = 65535) -> bytes:
    """A GIF whose logical screen and only frame claim side x side pixels."""
    header = b"GIF89a" + struct.pack("<HHBBB", side, side, 0, 0, 0)
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, side, side, 0)
    return header + image + b"\x02\x02\x44\x01\x00" + b"\x3b"


def bmp_bomb(side: int = 60000) -> bytes:
    """A BMP header for side x side 24-bit pixels with almost no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 4, 0, 0, 14 + len(info)) + info + b"\0" * 4


def tiff_bomb(side: int = 60000) -> bytes:
    """A tiny TIFF whose IFD claims side x side pixels."""
    small = bytearray(_save(Image.new("L", (8, 8)), "TIFF"))
    # Patch ImageWidth (256) and ImageLength (257) entries in the first IFD.
    ifd = struct.unpack_from("<I", small, 4)[0]
    (count,) = struct.unpack_from("<H", small, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        (tag,) = struct.unpack_from("<H", small, entry)
        if tag in (256, 257):
            struct.pack_into("<HHII", small, entry, tag, 4, 1, side)  # LONG
    return bytes(small)


def webp_bomb() -> bytes:
    """A real 34-byte lossless WebP of 8000 x 8000 black pixels (64 M, over the 50 M limit).

    libwebp refuses headers that disagree with the bitstream, so this one is genuine; it was
    made with ``Image.new("L", (8000, 8000)).save(buf, "WEBP", lossless=True, method=0)``
    and is inlined because encoding it takes seconds.
    """
    return bytes.fromhex("524946461a000000574542505650384c0e0000002f3fdfcf07071011fd0f4444ff03")


def jpeg_with_bad_exif() -> bytes:
    """A JPEG whose APP1 Exif segment is garbage (a broken IFD offset)."""
    jpeg = _save(_cat(), "JPEG")
    payload = b"Exif\0\0" + b"II*\0" + struct.pack("<I", 0xFFFFFF00) + b"\xde\xad" * 40
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + app1 + jpeg[2:]


def jpeg_with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return _save(_cat(), "JPEG", exif=exif.tobytes())


def jpeg_zip_polyglot() -> bytes:
    """A valid JPEG with a ZIP archive appended: both tools open it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("payload.txt", "not for us")
    return _save(_cat(), "JPEG") + buf.getvalue()


def png_with_unknown_critical_chunk() -> bytes:
    """A PNG carrying a chunk named ZZZZ (uppercase first letter: flagged critical)."""
    png = _save(Image.new("RGB", (8, 8), "red"), "PNG")
    iend = png.rfind(b"IEND") - 4
    return png[:iend] + png_chunk(b"ZZZZ", b"x" * 10) + png[iend:]


def sixteen_bit_tiff() -> bytes:
    grey = (np.asarray(_cat().convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    return _save(Image.fromarray(grey), "TIFF")  # uint16 -> mode I;16


def float_tiff() -> bytes:
    grey = np.asarray(_cat().convert("L"), dtype=np.float32) / 255.0
    return _save(Image.fromarray(grey), "TIFF")  # float32 -> mode F


def thousand_frame_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), (i % 256, 0, 0)) for i in range(1000)]
    return animated_gif(frames)


def build_cases() -> dict[str, Case]:
    cat = _cat()
    jpeg, png = _save(cat, "JPEG"), _save(cat, "PNG")
    webp, gif = _save(cat, "WEBP"), _save(cat.convert("P"), "GIF")
    ok = lambda content, name="photo.jpg": Case(content, name, 200, None)  # noqa: E731
    corrupt = lambda content, name="photo.jpg": Case(content, name, 422, "corrupt_image")  # noqa: E731
    unsupported = lambda content, name="photo.jpg": Case(  # noqa: E731
        content, name, 415, "unsupported_media_type"
    )
    too_large = lambda content, name="photo.jpg": Case(content, name, 422, "image_too_large")  # noqa: E731
    return {
        # Broken files of every accepted format.
        "jpeg truncated to half": corrupt(jpeg[: len(jpeg) // 2]),
        "jpeg header only": corrupt(jpeg[:200]),
        "png truncated": corrupt(png[: len(png) // 3], "photo.png"),
        "png corrupted body": corrupt(_flip_bytes(png, len(png) // 2), "photo.png"),
        # Pillow skips chunks it does not know, even ones flagged critical: still a picture.
        "png with an unknown chunk": ok(png_with_unknown_critical_chunk(), "photo.png"),
        "webp truncated": corrupt(webp[: len(webp) // 2], "photo.webp"),
        "gif truncated": corrupt(gif[:100], "photo.gif"),
        "signature only": corrupt(b"\x89PNG\r\n\x1a\n", "photo.png"),
        # Not images at all, whatever the name says.
        "zero bytes": Case(b"", "photo.jpg", 400, "empty_file"),
        "text renamed .jpg": unsupported(b"hello, I am a text file\n" * 20),
        "html renamed .jpg": unsupported(b"<!doctype html><script>alert(1)</script>"),
        "svg renamed .jpg": unsupported(
            b'<svg xmlns="http://www.w3.org/2000/svg" width="9999999" height="9999999">'
            b"<script>alert(1)</script></svg>"
        ),
        "pdf renamed .jpg": unsupported(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF"),
        "zip renamed .jpg": unsupported(_zip_bytes()),
        "random bytes": unsupported(np.random.default_rng(0).bytes(4096)),
        # A polyglot is still a valid JPEG: classified, the appended archive ignored.
        "jpeg+zip polyglot": ok(jpeg_zip_polyglot()),
        # Decompression bombs: refused from the header, before decoding, in every format.
        "png bomb 30000x30000": too_large(png_bomb(30000), "bomb.png"),
        "jpeg header claiming 65500x65500": too_large(jpeg_with_dimensions(65500, 65500)),
        "gif bomb 65535x65535": too_large(gif_bomb(), "bomb.gif"),
        "bmp bomb 60000x60000": too_large(bmp_bomb(), "bomb.bmp"),
        "tiff bomb 60000x60000": too_large(tiff_bomb(), "bomb.tiff"),
        "webp bomb 8000x8000": too_large(webp_bomb(), "bomb.webp"),
        # Unusual but valid: classified.
        "1x1 pixel": ok(_save(Image.new("RGB", (1, 1), "white"), "PNG"), "dot.png"),
        "1x10000 strip": ok(_save(Image.new("RGB", (1, 10000), "blue"), "PNG"), "strip.png"),
        "10000x1 strip": ok(_save(Image.new("RGB", (10000, 1), "blue"), "PNG"), "strip.png"),
        "16-bit tiff": ok(sixteen_bit_tiff(), "deep.tiff"),
        "float tiff": ok(float_tiff(), "float.tiff"),
        "animated gif, 1000 frames": ok(thousand_frame_gif(), "anim.gif"),
        "malformed exif": ok(jpeg_with_bad_exif()),
        "exif orientation 99": ok(jpeg_with_orientation(99)),
        # Hostile names are data, never paths.
        "path traversal name": ok(jpeg, "../../../../etc/passwd"),
        "NUL in name": ok(jpeg, "cat\0.jpg\0.exe"),
        "10 KB unicode name": ok(jpeg, "猫" * 3400 + ".jpg"),
    }


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("a.txt", "x" * 100)
    return buf.getvalue()
