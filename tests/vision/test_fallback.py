"""The fallback classifier and circuit breaker, with real faults: a corrupt model file, a
session that raises, an inference that overruns its timeout, and no model at all."""

from __future__ import annotations

import shutil
import time

import onnx
import pytest
from onnx import TensorProto, helper

from imgclass.app import create_app, services
from imgclass.vision.classifier import model_path
from imgclass.vision.export import MODEL_NAME
from tests.api.test_predict import post_files
from tests.conftest import CAT_CLASSES, fact_rows, make_settings

FAILURES = 2  # breaker threshold in these tests
COOL_DOWN = 0.3  # seconds


@pytest.fixture
def models(tmp_path, model_dir):
    """A private copy of the fp32 and int8 exports that a test may break."""
    target = tmp_path / "models"
    target.mkdir()
    for precision in ("fp32", "int8"):
        source = model_path(model_dir, MODEL_NAME, precision)
        if not source.is_file():
            pytest.fail(f"{source} is missing; `make install` exports both precisions")
        shutil.copy(source, target)
    return target


def primary_file(models):
    return model_path(models, MODEL_NAME, "fp32")


def make_app(tmp_path, models, **overrides):
    settings = make_settings(
        tmp_path / "data",
        models,
        **{
            "cache_entries": 0,  # every request must reach the models
            "breaker_failures": FAILURES,
            "breaker_reset_s": COOL_DOWN,
            **overrides,
        },
    )
    app = create_app(settings)
    return app, app.test_client()


def predict(client, cat_jpeg):
    resp = post_files(client, [("cat.jpg", cat_jpeg)])
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["results"][0]["predictions"][0]["class_id"] in CAT_CLASSES
    return body


def answered_by_fallback(body) -> bool:
    return body["model"]["fallback"] and body["model"]["version"].endswith("+int8")


def raising_model(path):
    """A valid ONNX file whose session fails at run time (a reshape that cannot fit)."""
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1000])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["logits"])],
        "raises",
        [inp],
        [out],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_a_corrupt_primary_file_is_served_by_the_fallback_and_heals(tmp_path, models, cat_jpeg):
    good = primary_file(models).read_bytes()
    primary_file(models).write_bytes(b"\x08\x07not an onnx model" * 100)
    app, client = make_app(tmp_path, models)

    body = predict(client, cat_jpeg)
    assert answered_by_fallback(body)
    (row,) = fact_rows(app)
    assert row["is_fallback"] == 1 and row["model_version"].endswith("+int8")
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"]["model"].startswith("fallback")
    assert client.get("/api/v1/models").get_json()["circuit_breaker"] == "open"

    primary_file(models).write_bytes(good)  # an operator puts the right file back
    time.sleep(COOL_DOWN + 0.1)
    healed = predict(client, cat_jpeg)
    assert not healed["model"]["fallback"] and healed["model"]["version"].endswith("+fp32")
    assert client.get("/api/v1/models").get_json()["circuit_breaker"] == "closed"
    assert [r["is_fallback"] for r in fact_rows(app)] == [1, 0]
    services(app).engine.dispose()


def test_a_raising_session_trips_the_breaker_and_a_probe_recovers(tmp_path, models, cat_jpeg):
    good = primary_file(models).read_bytes()
    raising_model(primary_file(models))
    app, client = make_app(tmp_path, models)
    chain = services(app).predictor.models
    assert chain.primary is not None  # it loads fine; it fails when run

    for _ in range(FAILURES + 2):
        assert answered_by_fallback(predict(client, cat_jpeg))
    assert chain.breaker_state == "open"
    assert "inference failed" in client.get("/api/v1/models").get_json()["primary_error"]

    primary_file(models).write_bytes(good)
    time.sleep(COOL_DOWN + 0.1)
    assert not predict(client, cat_jpeg)["model"]["fallback"]
    assert chain.breaker_state == "closed"
    services(app).engine.dispose()


def test_a_slow_inference_is_cut_off_and_answered_by_the_fallback(tmp_path, models, cat_jpeg):
    # 50 µs: far less than the real model needs for one image on any CPU.
    app, client = make_app(tmp_path, models, inference_timeout_s=0.00005)
    chain = services(app).predictor.models
    body = predict(client, cat_jpeg)
    assert answered_by_fallback(body)
    assert "longer than" in chain.primary_error

    services(app).settings.inference_timeout_s = 30  # the operator raises the limit
    time.sleep(COOL_DOWN + 0.1)
    for _ in range(FAILURES + 1):
        if not predict(client, cat_jpeg)["model"]["fallback"]:
            break
        time.sleep(COOL_DOWN + 0.1)
    assert chain.breaker_state == "closed"
    services(app).engine.dispose()


def test_with_no_model_at_all_the_answer_is_a_clear_503(tmp_path, models, cat_jpeg):
    primary_file(models).unlink()
    model_path(models, MODEL_NAME, "int8").unlink()
    app, client = make_app(tmp_path, models)
    resp = post_files(client, [("cat.jpg", cat_jpeg)])
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    error = resp.get_json()["error"]
    assert error["code"] == "model_unavailable" and "model export" in error["message"]
    (row,) = fact_rows(app)
    assert (row["status_code"], row["error_code"]) == (503, "model_unavailable")
    assert client.get("/readyz").status_code == 503
    services(app).engine.dispose()


def truncate(path):
    """Cut a model file in half, as an interrupted copy leaves it; return the good bytes."""
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    return good


def test_with_no_model_loaded_putting_the_files_back_heals_without_a_restart(
    tmp_path, models, cat_jpeg
):
    primary, fallback = primary_file(models), model_path(models, MODEL_NAME, "int8")
    good_primary, good_fallback = truncate(primary), truncate(fallback)
    app, client = make_app(tmp_path, models)

    resp = post_files(client, [("cat.jpg", cat_jpeg)])
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    message = resp.get_json()["error"]["message"]
    # Both failures are named, each with its file.
    assert message.startswith(f"no model can answer: model file {primary} could not be loaded")
    assert f"; fallback: model file {fallback} could not be loaded" in message
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "fallback: model file" in ready.get_json()["reasons"][0]

    primary.write_bytes(good_primary)  # an operator puts the right files back
    fallback.write_bytes(good_fallback)
    time.sleep(COOL_DOWN + 0.1)
    ready = client.get("/readyz")  # a probe alone loads them: no traffic needed
    assert ready.status_code == 200 and ready.get_json()["checks"]["model"] == "ok"
    body = predict(client, cat_jpeg)
    assert not body["model"]["fallback"] and body["model"]["version"].endswith("+fp32")
    models_now = client.get("/api/v1/models").get_json()
    assert [m["role"] for m in models_now["models"]] == ["primary", "fallback"]
    assert models_now["circuit_breaker"] == "closed"
    assert [r["status_code"] for r in fact_rows(app)] == [503, 200]
    services(app).engine.dispose()


def test_without_a_fallback_a_primary_put_back_heals_on_the_next_request(
    tmp_path, models, cat_jpeg
):
    good = primary_file(models).read_bytes()
    primary_file(models).unlink()
    app, client = make_app(tmp_path, models, fallback_precision="none")
    resp = post_files(client, [("cat.jpg", cat_jpeg)])
    assert resp.status_code == 503
    message = resp.get_json()["error"]["message"]
    assert "is missing" in message and "fallback: none is configured" in message

    primary_file(models).write_bytes(good)
    time.sleep(COOL_DOWN + 0.1)
    body = predict(client, cat_jpeg)  # the request itself loads it and is answered
    assert not body["model"]["fallback"]
    assert client.get("/readyz").status_code == 200
    services(app).engine.dispose()


def test_with_no_model_loaded_loading_is_tried_once_per_cool_down(tmp_path, models, cat_jpeg):
    good = truncate(primary_file(models))
    app, client = make_app(tmp_path, models, fallback_precision="none", breaker_reset_s=3600)
    primary_file(models).write_bytes(good)
    # Fixed on disk, but the cool-down after the failed load at start has not passed:
    # neither requests nor probes load the model again before it has.
    for _ in range(3):
        assert post_files(client, [("cat.jpg", cat_jpeg)]).status_code == 503
        assert client.get("/readyz").status_code == 503
    assert "loaded again every 3600 s" in client.get("/readyz").get_json()["reasons"][0]
    services(app).engine.dispose()


def test_both_failing_at_run_time_gives_503_naming_both(tmp_path, models, cat_jpeg):
    raising_model(primary_file(models))
    raising_model(model_path(models, MODEL_NAME, "int8"))
    app, client = make_app(tmp_path, models)
    resp = post_files(client, [("cat.jpg", cat_jpeg)])
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    message = resp.get_json()["error"]["message"]
    assert "no model can answer" in message and "fallback" in message
    services(app).engine.dispose()


def test_the_fallback_takes_the_primarys_input(classifier, model_dir):
    """The chain hands the fallback the tensors made for the primary; int8 agreement with
    fp32 on held-out photos is measured in tests/vision/test_int8.py."""
    from imgclass.vision.classifier import OnnxClassifier

    int8 = OnnxClassifier(model_path(model_dir, MODEL_NAME, "int8"))
    assert int8.preprocessing == classifier.preprocessing
