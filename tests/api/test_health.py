"""Liveness, readiness and the model listing."""

from __future__ import annotations

import pytest

from imgclass.app import create_app


@pytest.mark.backends
def test_healthz_and_readyz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {
        "model": "ok",
        "database": "ok",
    }


def test_readyz_reports_a_missing_model(settings, tmp_path):
    app = create_app(settings.model_copy(update={"model_dir": tmp_path / "nowhere"}))
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["checks"]["model"] == "not loaded" and "model export" in body["reasons"][0]


def test_readyz_reports_a_read_only_database(settings, app):
    db_file = settings.data_dir / "imgclass.db"
    read_only = settings.model_copy(
        update={
            "database_url": f"sqlite:///file:{db_file}?mode=ro&uri=true",
            "auto_migrate": False,
            "bootstrap_admin": False,
        }
    )
    resp = create_app(read_only).test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["database"] == "not writable"


def test_models_lists_what_is_loaded(client, classifier):
    body = client.get("/api/v1/models").get_json()
    model, fallback = body["models"]
    assert (model["role"], fallback["role"], body["circuit_breaker"]) == (
        "primary",
        "fallback",
        "closed",
    )
    assert fallback["precision"] == "int8" and fallback["sha256"] != model["sha256"]
    assert model["name"] == "efficientnet-lite0" and model["version"] == classifier.info.version
    assert model["input_size"] == [3, 224, 224] and model["classes"] == 1000
    assert model["sha256"] == classifier.info.sha256 and model["runtime"].startswith("onnxruntime")
