"""Where backups live: a local directory or an S3 bucket prefix, behind one small interface.

A store holds flat objects named like ``imgclass-20261125T143210.123456Z.db.zst``; it
knows nothing about manifests or SQLite. Both kinds make an object appear whole or not
at all (a local file is written under a hidden temporary name and renamed; an S3 PUT
is atomic), so a reader never sees half a backup.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from imgclass.warehouse.backup_errors import (
    BackupCorrupt,
    BackupNotFound,
    DestinationUnavailable,
    InvalidDestination,
)

if TYPE_CHECKING:
    from imgclass.config import Settings

# Object names a store accepts: no separators, no leading dot (hidden temp files).
_OBJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_PREFIX = 512


class BackupStore(Protocol):
    """The operations backups need from a place to keep files."""

    description: str  # what to show a person: a path or s3://bucket/prefix

    def names(self) -> list[str]:
        """Names of the objects in the store (direct children only)."""
        ...

    def exists(self, name: str) -> bool: ...

    def read_small(self, name: str, limit: int) -> bytes:
        """The whole object; BackupCorrupt when it is larger than ``limit`` bytes."""
        ...

    def write_small(self, name: str, data: bytes) -> None: ...

    def put(self, local: Path, name: str) -> None:
        """Store a local file under ``name``."""
        ...

    def fetch(self, name: str, staging_dir: Path | None) -> AbstractContextManager[Path]:
        """Context manager yielding a local path holding the object's bytes."""
        ...

    def delete(self, name: str) -> None: ...


def check_object_name(name: str) -> str:
    if not _OBJECT_NAME.match(name):
        raise BackupNotFound(f"invalid backup object name {name[:80]!r}")
    return name


def open_store(spec: str, settings: Settings) -> BackupStore:
    """The store for ``spec``: a directory path or ``s3://BUCKET[/PREFIX]``."""
    spec = spec.strip()
    if not spec:
        raise InvalidDestination("the backup destination is empty")
    if spec.lower().startswith("s3://"):
        bucket, _, prefix = spec[5:].partition("/")
        return S3Store(bucket, prefix, settings)
    if "://" in spec:
        scheme = spec.split("://", 1)[0][:20]
        raise InvalidDestination(
            f"unsupported backup destination scheme {scheme!r}: use a directory or "
            "s3://BUCKET/PREFIX"
        )
    return LocalStore(Path(spec))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """A directory (created on first write)."""

    def __init__(self, directory: Path):
        self.directory = directory.expanduser().resolve()
        self.description = str(self.directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise InvalidDestination(f"backup destination {self.directory} is not a directory")

    def _path(self, name: str) -> Path:
        return self.directory / check_object_name(name)

    def names(self) -> list[str]:
        try:
            return [e.name for e in os.scandir(self.directory) if e.is_file()]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DestinationUnavailable(f"cannot read {self.directory}: {exc.strerror}") from exc

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def read_small(self, name: str, limit: int) -> bytes:
        try:
            with self._path(name).open("rb") as fh:
                data = fh.read(limit + 1)
        except FileNotFoundError as exc:
            raise BackupNotFound(f"{name} is not in {self.description}") from exc
        if len(data) > limit:
            raise BackupCorrupt(f"{name} in {self.description} is larger than {limit} bytes")
        return data

    def _atomic_write(self, name: str, write) -> None:
        target = self._path(name)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=".partial")
        except OSError as exc:
            raise DestinationUnavailable(
                f"cannot write to {self.directory}: {exc.strerror or exc}"
            ) from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)  # the warehouse holds users' IP addresses
            os.replace(tmp, target)
            _fsync_dir(self.directory)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise DestinationUnavailable(f"cannot write {target}: {exc.strerror or exc}") from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_small(self, name: str, data: bytes) -> None:
        self._atomic_write(name, lambda fh: fh.write(data))

    def put(self, local: Path, name: str) -> None:
        def copy(fh) -> None:
            with local.open("rb") as src:
                shutil.copyfileobj(src, fh, 1024 * 1024)

        self._atomic_write(name, copy)

    @contextmanager
    def fetch(self, name: str, staging_dir: Path | None) -> Iterator[Path]:
        path = self._path(name)
        if not path.is_file():
            raise BackupNotFound(f"{name} is not in {self.description}")
        yield path

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)


class S3Store:
    """A prefix in an S3 bucket, on AWS or any S3-compatible server (MinIO, Ceph, moto…)."""

    def __init__(self, bucket: str, prefix: str, settings: Settings):
        if not _BUCKET.match(bucket):
            raise InvalidDestination(
                f"invalid S3 bucket name {bucket[:70]!r}: use s3://BUCKET/PREFIX with a bucket "
                "of 3-63 lowercase letters, digits, dots and hyphens"
            )
        prefix = prefix.strip("/")
        if len(prefix) > MAX_PREFIX or any(p in ("", ".", "..") for p in prefix.split("/")[1:]):
            raise InvalidDestination(f"invalid S3 prefix {prefix[:70]!r}")
        self.bucket = bucket
        self.prefix = prefix
        self.description = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.endpoint = settings.s3_endpoint_url or "AWS S3"
        self._client = _s3_client(settings)
        self._bucket_checked = False

    def _key(self, name: str) -> str:
        name = check_object_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    @contextmanager
    def _errors(self, name: str | None = None) -> Iterator[None]:
        """Turn botocore's exceptions into one-line errors that name the problem."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound") and name is not None:
                raise BackupNotFound(f"{name} is not in {self.description}") from exc
            if code in ("NoSuchBucket", "404", "NotFound"):
                raise DestinationUnavailable(
                    f"S3 bucket {self.bucket!r} does not exist at {self.endpoint}"
                ) from exc
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise DestinationUnavailable(
                    f"S3 refused access to {self.description} at {self.endpoint} ({code}): "
                    "check IMGCLASS_S3_ACCESS_KEY_ID / IMGCLASS_S3_SECRET_ACCESS_KEY"
                ) from exc
            message = str(error.get("Message", exc))
            raise DestinationUnavailable(
                f"S3 error on {self.description}: {code} {message}"[:300]
            ) from exc
        except S3UploadFailedError as exc:
            raise DestinationUnavailable(
                f"upload to {self.description} failed: {exc}"[:300]
            ) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise DestinationUnavailable(
                "no S3 credentials: set IMGCLASS_S3_ACCESS_KEY_ID and "
                "IMGCLASS_S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            ) from exc
        except EndpointConnectionError as exc:
            raise DestinationUnavailable(
                f"cannot reach the S3 endpoint {self.endpoint}: {exc}"[:300]
            ) from exc
        except BotoCoreError as exc:
            raise DestinationUnavailable(
                f"S3 request to {self.endpoint} failed: {exc}"[:300]
            ) from exc

    def _check_bucket(self) -> None:
        # One HEAD tells a missing bucket and an unreachable endpoint apart from a
        # missing object, so every later error message can be precise.
        if self._bucket_checked:
            return
        with self._errors():
            self._client.head_bucket(Bucket=self.bucket)
        self._bucket_checked = True

    def names(self) -> list[str]:
        self._check_bucket()
        start = f"{self.prefix}/" if self.prefix else ""
        found = []
        with self._errors():
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start, Delimiter="/"
            )
            for page in pages:
                found.extend(obj["Key"][len(start) :] for obj in page.get("Contents", []))
        return [n for n in found if _OBJECT_NAME.match(n)]

    def exists(self, name: str) -> bool:
        self._check_bucket()
        try:
            with self._errors(name):
                self._client.head_object(Bucket=self.bucket, Key=self._key(name))
        except BackupNotFound:
            return False
        return True

    def read_small(self, name: str, limit: int) -> bytes:
        self._check_bucket()
        with self._errors(name):
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
            try:
                data = body.read(limit + 1)
            finally:
                body.close()
        if len(data) > limit:
            raise BackupCorrupt(f"{name} in {self.description} is larger than {limit} bytes")
        return data

    def write_small(self, name: str, data: bytes) -> None:
        self._check_bucket()
        with self._errors():
            self._client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def put(self, local: Path, name: str) -> None:
        self._check_bucket()
        with self._errors():
            # Managed transfer: multipart for large files, retried per part.
            self._client.upload_file(str(local), self.bucket, self._key(name))

    @contextmanager
    def fetch(self, name: str, staging_dir: Path | None) -> Iterator[Path]:
        self._check_bucket()
        with tempfile.TemporaryDirectory(dir=staging_dir, prefix=".imgclass-fetch-") as tmp:
            path = Path(tmp) / check_object_name(name)
            with self._errors(name):
                self._client.download_file(self.bucket, self._key(name), str(path))
            yield path

    def delete(self, name: str) -> None:
        self._check_bucket()
        with self._errors():
            self._client.delete_object(Bucket=self.bucket, Key=self._key(name))


def _s3_client(settings: Settings):
    # Imported here: boto3 takes a noticeable time to import and only S3 users need it.
    import boto3
    from botocore.config import Config

    options: dict = {}
    if settings.s3_endpoint_url:
        options["endpoint_url"] = settings.s3_endpoint_url
    if settings.s3_region:
        options["region_name"] = settings.s3_region
    if settings.s3_access_key_id:
        options["aws_access_key_id"] = settings.s3_access_key_id
    if settings.s3_secret_access_key:
        options["aws_secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        # S3-compatible servers on an IP address or a single host name need path-style URLs.
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
    )
    return boto3.session.Session().client("s3", config=config, **options)
