"""Settings: every knob of the service, read once from ``IMGCLASS_*`` environment variables.

This is the only module that reads the environment. Everything else receives a
``Settings`` instance (built once in ``create_app`` or the CLI) and never looks
at ``os.environ`` itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def available_cpus() -> int:
    """CPUs this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    """All configuration of imgclass. Each field maps to ``IMGCLASS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="IMGCLASS_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="SQLite file, admin token, backups")
    model_dir: Path = Field(Path("models"), description="exported ONNX models")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file <data_dir>/imgclass.db"
    )
    model_name: str = Field("efficientnet-lite0", description="model to serve")
    model_precision: Literal["fp32", "int8"] = Field("fp32", description="which export to serve")

    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="request body limit")
    max_image_pixels: int = Field(
        50_000_000, gt=0, description="width x height above which an image is refused"
    )
    max_files_per_request: int = Field(16, gt=0, description="files in one predict request")
    default_top_k: int = Field(5, ge=1, le=20)

    require_auth: bool = Field(False, description="refuse anonymous predict requests")
    auto_migrate: bool = Field(True, description="run database migrations when the app starts")
    bootstrap_admin: bool = Field(True, description="create an admin user if there is none")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int | None = Field(None, ge=1, description="gunicorn workers; default: CPUs")
    threads: int = Field(4, ge=1, description="threads per gunicorn worker")
    inference_threads: int = Field(
        1, ge=1, description="ONNX Runtime intra-op threads per worker process"
    )
    request_timeout_s: int = Field(60, ge=1, description="gunicorn worker timeout")
    log_level: str = "INFO"

    # Backups (warehouse/backup.py): where they go and how many are kept.
    backup_destination: str | None = Field(
        None, description="backup directory or s3://BUCKET/PREFIX; default <data_dir>/backups"
    )
    backup_compression: Literal["zstd", "gzip"] = Field("zstd", description="backup file format")
    backup_keep_last: int = Field(7, ge=1, description="prune keeps the newest N backups")
    backup_keep_daily: int = Field(7, ge=0, description="…and the newest of each of D days")
    backup_keep_weekly: int = Field(4, ge=0, description="…and the newest of each of W weeks")
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, Ceph…); default: AWS"
    )
    s3_region: str | None = Field(None, description="S3 region; default: boto3's own")
    s3_access_key_id: str | None = Field(None, description="default: boto3's own (AWS_*)")
    s3_secret_access_key: SecretStr | None = Field(None, description="default: boto3's own")

    @field_validator("data_dir", "model_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'imgclass.db'}"

    @property
    def effective_workers(self) -> int:
        return self.workers or available_cpus()

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin-token"

    @property
    def local_backup_dir(self) -> Path:
        return self.data_dir / "backups"

    @property
    def effective_backup_destination(self) -> str:
        return self.backup_destination or str(self.local_backup_dir)
