"""Compress a database snapshot or dump and back, hashing both sides in the same pass.

zstd (level 3, one thread) is the default: on a 56 MB warehouse it compressed 3.6x
faster per CPU second than gzip -6, to a 3% smaller file, and decompressed 2x faster
(``python -m bench.backup_compression``; the table is in docs/ARCHITECTURE.md). One
thread, because the service's workers already have the cores. gzip is the alternative
(``IMGCLASS_BACKUP_COMPRESSION=gzip``); both are always readable.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import zstandard

from imgclass.warehouse.backup_errors import BackupCorrupt

Compression = Literal["zstd", "gzip"]
SUFFIX: dict[str, str] = {"zstd": ".db.zst", "gzip": ".db.gz"}  # a SQLite database
PG_SUFFIX: dict[str, str] = {"zstd": ".pgdump.zst", "gzip": ".pgdump.gz"}  # a pg_dump archive
DATA_SUFFIXES = (*SUFFIX.values(), *PG_SUFFIX.values())  # every kind of data object
CHUNK = 1024 * 1024
ZSTD_LEVEL = 3
GZIP_LEVEL = 6


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str


def file_digest(path: Path) -> Digest:
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256")
    return Digest(path.stat().st_size, digest.hexdigest())


def compress(source: Path, target: Path, method: Compression) -> tuple[Digest, Digest]:
    """Write ``source`` compressed to ``target``; the (uncompressed, compressed) digests."""
    with source.open("rb") as src:
        return compress_stream(src, target, method, size=source.stat().st_size)


def compress_stream(
    src: BinaryIO, target: Path, method: Compression, *, size: int = -1
) -> tuple[Digest, Digest]:
    """Compress everything ``src`` yields (a file, or a pipe from pg_dump) into ``target``.

    ``size`` (-1: unknown) goes into the zstd frame header. ``target`` is created
    owner-only: it is the warehouse, users' addresses included.
    """
    sha, total = hashlib.sha256(), 0
    with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        if method == "zstd":
            cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
            writer = cctx.stream_writer(out, size=size, closefd=False)
        else:
            writer = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
        with writer:
            while chunk := src.read(CHUNK):
                sha.update(chunk)
                total += len(chunk)
                writer.write(chunk)
    return Digest(total, sha.hexdigest()), file_digest(target)


def decompress(source: Path, out: BinaryIO, method: Compression, limit: int) -> Digest:
    """Decompress ``source`` into ``out``; BackupCorrupt if it is damaged or over ``limit``.

    The limit (the manifest's uncompressed size) keeps a hostile or damaged file from
    filling the disk: nothing longer than what was backed up is ever written.
    """
    sha, size = hashlib.sha256(), 0
    try:
        with source.open("rb") as src:
            if method == "zstd":
                reader = zstandard.ZstdDecompressor().stream_reader(src, closefd=False)
            else:
                reader = gzip.GzipFile(fileobj=src, mode="rb")
            with reader:
                while chunk := reader.read(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise BackupCorrupt(
                            f"{source.name} decompresses to more than the {limit} bytes "
                            "its manifest records"
                        )
                    sha.update(chunk)
                    out.write(chunk)
    except (zstandard.ZstdError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BackupCorrupt(f"{source.name} cannot be decompressed: {exc}") from exc
    return Digest(size, sha.hexdigest())
