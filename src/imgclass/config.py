"""Settings: every knob of the service, read once from ``IMGCLASS_*`` environment variables.

This is the only module that reads the environment. Everything else receives a
``Settings`` instance (built once in ``create_app`` or the CLI) and never looks
at ``os.environ`` itself.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
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

    metrics_dir: Path | None = Field(
        None,
        description="prometheus_client multiprocess directory for `serve` (emptied at start); "
        "default: one per data dir in /dev/shm",
    )
    metrics_top_classes: int = Field(
        25, ge=1, le=1000, description="classes named in imgclass_predictions_total per process"
    )

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
    def effective_metrics_dir(self) -> Path:
        if self.metrics_dir:
            return self.metrics_dir.expanduser().resolve()
        # Not on the data disk: prometheus_client mmaps sparse files there, and a worker
        # that writes a metric while that filesystem is full dies of SIGBUS (measured: a
        # crash loop on a full data disk). /dev/shm is memory; one directory per data dir.
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            key = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
            return shm / f"imgclass-metrics-{key}"
        return self.data_dir / "metrics"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin-token"
