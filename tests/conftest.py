"""Shared fixtures: the real exported model, photos, a temp data dir, an app and a client."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as skdata
from sqlalchemy import text

from imgclass.app import create_app, services
from imgclass.config import Settings
from imgclass.vision.classifier import OnnxClassifier, model_path
from imgclass.vision.export import MODEL_NAME, export_onnx

# database_backend, database_url, db_engine, postgres_url, …: SQLite and PostgreSQL runs.
pytest_plugins = ["tests.support.backends", "tests.support.disk"]

REPO = Path(__file__).resolve().parents[1]
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The fp32 ONNX model: the one `make install` exported, or a fresh export."""
    repo_models = REPO / "models"
    if model_path(repo_models, MODEL_NAME, "fp32").is_file():
        return repo_models
    target = tmp_path_factory.mktemp("models")
    export_onnx(target)
    return target


@pytest.fixture(scope="session")
def classifier(model_dir) -> OnnxClassifier:
    return OnnxClassifier(model_path(model_dir, MODEL_NAME, "fp32"))


def jpeg_bytes(img: Image.Image, **save_args) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, **save_args)
    return buf.getvalue()


def png_bytes(img: Image.Image, **save_args) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **save_args)
    return buf.getvalue()


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    """Real photos that ship with scikit-image."""
    return {
        name: Image.fromarray(getattr(skdata, name)())
        for name in ("chelsea", "coffee", "rocket", "astronaut")
    }


@pytest.fixture(scope="session")
def cat_jpeg(photos) -> bytes:
    return jpeg_bytes(photos["chelsea"])


@pytest.fixture(scope="session")
def coffee_jpeg(photos) -> bytes:
    return jpeg_bytes(photos["coffee"])


@pytest.fixture
def settings(tmp_path, model_dir, database_backend, request) -> Settings:
    # SQLite: the default file in the data dir; PostgreSQL: the test's fresh database.
    url = request.getfixturevalue("database_url") if database_backend == "postgresql" else None
    return make_settings(tmp_path / "data", model_dir, database_url=url)


def make_settings(data_dir: Path, model_dir: Path, **overrides) -> Settings:
    """Settings for an app under test; tests that build their own apps start from these."""
    # No background drift thread: tests call DriftMonitor.update() when they need a report.
    # No rate limits: tests fire requests faster than any client should (the limits have
    # their own tests in tests/api/test_security.py, which set them explicitly).
    defaults = {
        "database_url": None,
        "analytics_database_url": None,
        "drift_interval_s": 0,
        "rate_limit_per_ip": "",
        "rate_limit_per_key": "",
    }
    return Settings(data_dir=data_dir, model_dir=model_dir, **{**defaults, **overrides})


@pytest.fixture
def app(settings):
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    services(app).engine.dispose()
    services(app).analytics_engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin_key(settings, app) -> str:
    return settings.admin_token_path.read_text().strip()


def fact_rows(app) -> list[dict]:
    """Every fact joined to all five dimensions (inner joins: none may be missing)."""
    query = text(
        """
        SELECT f.request_id, f.status_code, f.error_code, f.confidence, f.time_taken,
               f.request_count, f.endpoint, t.timestamp_key, t.day, t.hour,
               u.username, u.ip_address, u.user_agent,
               i.image_id, i.image_filename, i.width, i.height, i.format, i.bytes,
               i.brightness, f.cache_hit, f.is_fallback,
               c.class_id, c.class_name, m.model_name, m.model_version
        FROM api_event_fact f
        JOIN time_dim t ON t.timestamp_key = f.timestamp_key
        JOIN user_dim u ON u.user_key = f.user_key
        JOIN image_dim i ON i.image_key = f.image_key
        JOIN class_dim c ON c.class_key = f.class_key
        JOIN model_dim m ON m.model_key = f.model_key
        ORDER BY f.event_id
        """
    )
    with services(app).engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def fact_count(app) -> int:
    with services(app).engine.connect() as conn:
        return conn.execute(text("SELECT COUNT(*) FROM api_event_fact")).scalar_one()
