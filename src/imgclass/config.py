"""Settings: every knob of the service, read once from ``IMGCLASS_*`` environment variables.

This is the only module that reads the environment. Everything else receives a
``Settings`` instance (built once in ``create_app`` or the CLI) and never looks
at ``os.environ`` itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imgclass.ops import cpus as _cpus


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

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Unset: derived from the CPUs this process may use (ops/cpus.py: plan()).
    workers: int | None = Field(None, ge=1, description="gunicorn workers; default: CPUs")
    threads: int | None = Field(
        None, ge=1, description="threads per gunicorn worker; default: inference threads + 3"
    )
    inference_threads: int | None = Field(
        None, ge=1, description="ONNX Runtime intra-op threads per worker; default: CPUs/workers"
    )
    request_timeout_s: int = Field(60, ge=1, description="gunicorn worker timeout")
    log_level: str = "INFO"

    @field_validator("data_dir", "model_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

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
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin-token"
