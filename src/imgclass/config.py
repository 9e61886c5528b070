"""Settings: every knob of the service, read once from ``IMGCLASS_*`` environment variables.

This is the only module that reads the environment. Everything else receives a
``Settings`` instance (built once in ``create_app`` or the CLI) and never looks
at ``os.environ`` itself.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imgclass.ops import cpus as _cpus

# What gunicorn reads of a request head before the app sees it: the request line, the number
# of header fields and the size of each (gunicorn's defaults, set explicitly in
# server.ImgclassServer because the OpenAPI spec documents the 414 and 431 they cause). The
# body's limit is the app's (``max_upload_bytes``, Flask's MAX_CONTENT_LENGTH): gunicorn has none.
LIMIT_REQUEST_LINE = 4094
LIMIT_REQUEST_FIELDS = 100
LIMIT_REQUEST_FIELD_SIZE = 8190


def available_cpus() -> int:
    """Whole CPUs this process may use: affinity capped by the cgroup CPU quota, at least 1."""
    return _cpus.available_cpus()


class Settings(BaseSettings):
    """All configuration of imgclass. Each field maps to ``IMGCLASS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="IMGCLASS_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="SQLite file, admin token, backups")
    model_dir: Path = Field(Path("models"), description="exported ONNX models")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file <data_dir>/imgclass.db"
    )
    analytics_database_url: str | None = Field(
        None, description="SQLAlchemy URL for analytics reads (a read replica); default: primary"
    )
    db_pool_size: int = Field(5, ge=1, description="connections kept open per process (server DBs)")
    db_max_overflow: int = Field(
        10, ge=0, description="extra connections a process may open beyond the pool under load"
    )
    db_pool_timeout_s: float = Field(
        30.0, gt=0, description="wait this long for a free pooled connection, then fail"
    )
    db_pool_recycle_s: int = Field(
        1800, ge=-1, description="replace pooled connections older than this (-1: never)"
    )
    db_pool_pre_ping: bool = Field(
        True, description="test a pooled connection before use (survives server restarts)"
    )
    sqlite_cache_kib: int = Field(
        2048,
        ge=64,
        description="SQLite page cache per connection, KiB (SQLite's default; a worker keeps "
        "a few connections)",
    )
    dimension_cache_entries: int = Field(
        20_000,
        ge=0,
        description="dimension keys (minutes, clients, classes, models) each worker remembers "
        "(0: none, every record looks them up)",
    )
    db_statement_timeout_s: float = Field(
        30.0,
        ge=0,
        description="cancel the server's PostgreSQL statements and lock waits after this long "
        "(0: no limit)",
    )
    model_name: str = Field("efficientnet-lite0", description="model to serve")
    model_precision: Literal["fp32", "int8"] = Field("fp32", description="which export to serve")

    fallback_precision: Literal["int8", "fp32", "none"] = Field(
        "int8", description="export of the same weights that answers when the primary fails"
    )
    inference_timeout_s: float = Field(
        5.0, ge=0, description="abandon a primary inference after this long (0: no limit)"
    )
    breaker_failures: int = Field(
        3, ge=1, description="consecutive primary failures that open the circuit breaker"
    )
    breaker_reset_s: float = Field(
        30.0, gt=0, description="seconds the breaker stays open before probing the primary"
    )
    cache_entries: int = Field(
        4096, ge=0, description="in-process result cache size per worker (0: off)"
    )
    cache_ttl_s: float = Field(3600.0, gt=0, description="result cache entry lifetime")
    redis_url: str | None = Field(
        None, description="Redis URL for a result cache shared by all workers and replicas"
    )

    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="request body limit")
    max_image_pixels: int = Field(
        50_000_000, gt=0, description="width x height above which an image is refused"
    )
    max_files_per_request: int = Field(16, gt=0, description="files in one predict request")
    default_top_k: int = Field(5, ge=1, le=20)

    require_auth: bool = Field(False, description="refuse anonymous predict requests")
    trusted_proxies: int = Field(
        0,
        ge=0,
        le=10,
        description="reverse proxies in front (nginx, an Ingress) whose X-Forwarded-For/-Proto "
        "are believed; 0 trusts none, so a client cannot forge its address",
    )
    auto_migrate: bool = Field(True, description="run database migrations when the app starts")
    bootstrap_admin: bool = Field(True, description="create an admin user if there is none")
    admin_key: SecretStr | None = Field(
        None,
        description="API key for the first admin (from a secret store); unset: a random key, "
        "printed once and saved to <data_dir>/admin-token",
    )

    rate_limit_per_ip: str = Field(
        "100/second", description="flask-limiter limit per client IP ('' turns it off)"
    )
    rate_limit_per_key: str = Field(
        "100/second", description="flask-limiter limit per API key ('' turns it off)"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed to call the API from a browser"
    )

    ip_storage: Literal["full", "truncated", "hashed"] = Field(
        "full", description="what the warehouse keeps of client addresses"
    )
    ip_hash_key: str | None = Field(
        None, description="secret for hashed IPs; default: generated into <data_dir>/ip-hash-key"
    )
    log_format: Literal["json", "text"] = Field("json", description="log line format")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Unset: derived from the CPUs this process may use (ops/cpus.py: plan()).
    workers: int | None = Field(
        None, ge=1, description="gunicorn workers; default: CPUs ÷ inference threads (1 each)"
    )
    threads: int | None = Field(
        None, ge=1, description="threads per gunicorn worker; default: inference threads + 3"
    )
    inference_threads: int | None = Field(
        None, ge=1, description="ONNX Runtime intra-op threads per worker; default: CPUs/workers"
    )
    request_timeout_s: int = Field(
        60,
        ge=1,
        description="gunicorn worker timeout: a worker silent this long is killed and replaced",
    )
    log_level: str = "INFO"

    metrics_dir: Path | None = Field(
        None,
        description="prometheus_client multiprocess directory for `serve` (emptied at start, "
        "refused while another server uses it); default: one per server in /dev/shm",
    )
    metrics_top_classes: int = Field(
        25, ge=1, le=1000, description="classes named in imgclass_predictions_total per server"
    )

    # Drift: Population Stability Index of a recent window against a reference window.
    drift_reference_events: int = Field(
        1000, ge=1, le=100_000, description="reference = the first N successful events"
    )
    drift_reference_start: datetime | None = Field(
        None, description="reference = events from this UTC time (with drift_reference_end)"
    )
    drift_reference_end: datetime | None = Field(
        None, description="... up to (excluding) this UTC time; replaces the first-N reference"
    )
    drift_recent_events: int = Field(
        500, ge=1, le=100_000, description="recent = the last M successful events"
    )
    drift_recent_minutes: int | None = Field(
        None, ge=1, description="recent = events of the last T minutes (replaces the last M)"
    )
    drift_min_events: int = Field(
        200, ge=1, description="fewer events in either window: no index, 'insufficient_data'"
    )
    drift_bins: int = Field(10, ge=2, le=50, description="quantile bins / top categories")
    drift_threshold: float = Field(0.2, gt=0, description="PSI above this is significant drift")
    drift_interval_s: float = Field(
        60,
        ge=0,
        description="seconds between background drift and accuracy updates; 0 = no background",
    )
    accuracy_window_hours: float = Field(
        24,
        gt=0,
        le=24 * 366,
        description="the accuracy gauges cover the predictions of the last N hours with feedback",
    )
    # Backups (warehouse/backup.py): where they go and how many are kept.
    backup_destination: str | None = Field(
        None, description="backup directory or s3://BUCKET/PREFIX; default <data_dir>/backups"
    )
    backup_compression: Literal["zstd", "gzip"] = Field("zstd", description="backup file format")
    backup_keep_last: int = Field(7, ge=1, description="prune keeps the newest N backups")
    backup_keep_daily: int = Field(7, ge=0, description="…and the newest of each of D days")
    backup_keep_weekly: int = Field(4, ge=0, description="…and the newest of each of W weeks")
    pg_bin_dir: Path | None = Field(
        None,
        description="directory of pg_dump/pg_restore for PostgreSQL backups; default: the PATH",
    )
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

    @field_validator("database_url", "analytics_database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        # Checked at start (a clear error, not a traceback at the first connection), and
        # postgresql:// put on the driver we ship; empty means the default.
        if not value:
            return None
        from imgclass.warehouse.db import normalize_url

        return normalize_url(value)

    @field_validator("drift_reference_start", "drift_reference_end")
    @classmethod
    def _naive_utc(cls, value: datetime | None) -> datetime | None:
        # The warehouse stores naive UTC; a zoned time is converted, a naive one is UTC.
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    @model_validator(mode="after")
    def _reference_range(self) -> Settings:
        start, end = self.drift_reference_start, self.drift_reference_end
        if (start is None) != (end is None):
            raise ValueError("set both drift_reference_start and drift_reference_end, or neither")
        if start is not None and end is not None and start >= end:
            raise ValueError("drift_reference_start must be before drift_reference_end")
        return self

    @field_validator("admin_key")
    @classmethod
    def _strong_key(cls, value: SecretStr | None) -> SecretStr | None:
        key = value.get_secret_value() if value is not None else None
        if key is not None and (len(key) < 32 or any(c.isspace() for c in key)):
            raise ValueError(
                "the admin key must be at least 32 characters without spaces; make one with "
                "python -c 'import secrets; print(\"imgc_\" + secrets.token_urlsafe(32))'"
            )
        return value

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'imgclass.db'}"

    @property
    def effective_analytics_database_url(self) -> str:
        return self.analytics_database_url or self.effective_database_url

    @property
    def engine_options(self) -> dict:
        """Keyword arguments for ``warehouse.db.make_engine``: pool and cache settings."""
        return {
            "pool_size": self.db_pool_size,
            "max_overflow": self.db_max_overflow,
            "pool_timeout_s": self.db_pool_timeout_s,
            "pool_recycle_s": self.db_pool_recycle_s,
            "pool_pre_ping": self.db_pool_pre_ping,
            "sqlite_cache_kib": self.sqlite_cache_kib,
        }

    @property
    def cpu_plan(self) -> _cpus.CpuPlan:
        """Workers, threads and inference threads: the settings given, the rest from the CPUs."""
        return _cpus.plan(
            available_cpus(),
            workers=self.workers,
            threads=self.threads,
            inference_threads=self.inference_threads,
        )

    @property
    def effective_workers(self) -> int:
        return self.cpu_plan.workers

    @property
    def effective_threads(self) -> int:
        return self.cpu_plan.threads

    @property
    def effective_inference_threads(self) -> int:
        return self.cpu_plan.inference_threads

    @property
    def explicit_metrics_dir(self) -> Path | None:
        """``IMGCLASS_METRICS_DIR``, absolute; None when unset (one per server, below)."""
        return self.metrics_dir.expanduser().resolve() if self.metrics_dir else None

    @property
    def default_metrics_prefix(self) -> Path:
        """Without ``metrics_dir`` each server uses ``<this>-<master pid>`` (ops/multiproc.py)."""
        # Not on the data disk: prometheus_client mmaps sparse files there, and a worker
        # that writes a metric while that filesystem is full dies of SIGBUS (measured: a
        # crash loop on a full data disk). /dev/shm is memory; the data dir's hash keeps
        # servers of different data dirs apart, the pid servers of the same one.
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            key = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
            return shm / f"imgclass-metrics-{key}"
        return self.data_dir / "metrics"

    @property
    def ip_hash_key_path(self) -> Path:
        return self.data_dir / "ip-hash-key"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin-token"

    @property
    def local_backup_dir(self) -> Path:
        return self.data_dir / "backups"

    @property
    def effective_backup_destination(self) -> str:
        return self.backup_destination or str(self.local_backup_dir)
