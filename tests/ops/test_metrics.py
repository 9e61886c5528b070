"""``GET /metrics`` in one process (the Flask test client): names, labels and values.

Metrics are process-wide, and other tests in the same process count too, so
each test compares the page before and after what it does.
"""

from __future__ import annotations

import threading

import pytest

from imgclass.app import create_app, services
from imgclass.ops import metrics
from imgclass.ops.metrics import ClassLabels
from tests.conftest import png_bytes
from tests.support.prom import families, parse, series, value

EXPECTED = {
    "imgclass_http_requests": "counter",
    "imgclass_http_request_duration_seconds": "histogram",
    "imgclass_stage_duration_seconds": "histogram",
    "imgclass_images_in_flight": "gauge",
    "imgclass_predictions": "counter",
    "imgclass_prediction_confidence": "histogram",
    "imgclass_input_width_pixels": "histogram",
    "imgclass_input_height_pixels": "histogram",
    "imgclass_input_size_bytes": "histogram",
    "imgclass_model_info": "gauge",
    "imgclass_ready": "gauge",
    "imgclass_data_dir_free_bytes": "gauge",
    "imgclass_data_dir_total_bytes": "gauge",
    "imgclass_cache_hits": "counter",
    "imgclass_cache_misses": "counter",
    "imgclass_fallback_activations": "counter",
    "imgclass_circuit_breaker_state": "gauge",
    "imgclass_drift_psi": "gauge",
    "imgclass_drift_threshold": "gauge",
    "imgclass_feedback": "counter",
    "imgclass_model_accuracy_ratio": "gauge",
    "imgclass_model_feedback_events": "gauge",
    "imgclass_class_accuracy_ratio": "gauge",
    "imgclass_class_feedback_events": "gauge",
    "imgclass_backup_last_success_timestamp_seconds": "gauge",
}
PREDICT = "/api/v1/predict"


def scrape(client):
    resp = client.get("/metrics")
    assert resp.status_code == 200
    return parse(resp.get_data(as_text=True))


def post_image(client, data: bytes, content_type="image/jpeg", query=""):
    return client.post(PREDICT + query, data=data, content_type=content_type)


def test_metrics_page_is_prometheus_text_with_only_imgclass_names(client):
    metrics.fallback_activated("some-model")  # labelled series appear once used
    metrics.set_breaker_state("some-model", "closed")
    metrics.set_drift_psi("width", 0.0)
    metrics.set_drift_threshold(0.2)
    metrics.set_model_accuracy("some-model", "1", 0, float("nan"))
    metrics.set_class_accuracy("other", 0, float("nan"))
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type == "text/plain; version=0.0.4; charset=utf-8"
    declared = families(resp.get_data(as_text=True))
    assert all(name.startswith("imgclass_") for name in declared), sorted(declared)
    assert {name: declared.get(name) for name in EXPECTED} == EXPECTED


def test_requests_are_counted_by_route_and_status(client, cat_jpeg):
    before = scrape(client)
    assert post_image(client, cat_jpeg).status_code == 200
    assert client.post(PREDICT, data={}).status_code == 400
    assert post_image(client, b"<html>not an image</html>").status_code == 415
    for path in ("/no/such/page", "/api/v1/predict/../../etc/passwd", "/x" * 50):
        assert client.get(path).status_code == 404
    assert client.get(PREDICT).status_code == 405
    after = scrape(client)

    def delta(endpoint, status):
        labels = {"endpoint": endpoint, "status": status}
        name = "imgclass_http_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(PREDICT, "200") == 1
    assert delta(PREDICT, "400") == 1
    assert delta(PREDICT, "415") == 1
    # A path the app does not know never becomes a label value of its own.
    assert delta("unmatched", "404") == 3
    assert delta("unmatched", "405") == 1
    endpoints = {
        dict(labels)["endpoint"] for labels in series(after, "imgclass_http_requests_total")
    }
    assert not any("passwd" in e or "/x/x" in e for e in endpoints)
    # The scrape before counts itself once the response is out.
    assert delta("/metrics", "200") == 1
    hist = "imgclass_http_request_duration_seconds_count"
    assert value(after, hist, endpoint=PREDICT) - value(before, hist, endpoint=PREDICT) == 3


def test_predict_observes_stages_inputs_class_and_confidence(client, cat_jpeg, photos):
    coffee_png = png_bytes(photos["coffee"])
    before = scrape(client)
    resp = client.post(
        PREDICT + "?top_k=1",
        data={"image": [(_file(cat_jpeg), "cat.jpg"), (_file(coffee_png), "coffee.png")]},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    stage = "imgclass_stage_duration_seconds_count"
    # Two images: decoded and preprocessed one by one, classified in one batch, recorded at once.
    assert delta(stage, stage="decode") == 2
    assert delta(stage, stage="preprocess") == 2
    assert delta(stage, stage="inference") == 1
    assert delta(stage, stage="db_write") == 1
    assert delta("imgclass_stage_duration_seconds_sum", stage="inference") > 0

    cat, coffee = photos["chelsea"], photos["coffee"]
    assert delta("imgclass_input_width_pixels_sum") == cat.width + coffee.width
    assert delta("imgclass_input_height_pixels_sum") == cat.height + coffee.height
    assert delta("imgclass_input_size_bytes_sum") == len(cat_jpeg) + len(coffee_png)
    assert delta("imgclass_input_width_pixels_count") == 2

    answers = [r["predictions"][0] for r in resp.get_json()["results"]]
    for answer in answers:
        assert delta("imgclass_predictions_total", class_name=answer["label"]) == 1
    assert delta("imgclass_prediction_confidence_count") == 2
    assert delta("imgclass_prediction_confidence_sum") == pytest.approx(
        sum(a["score"] for a in answers), abs=1e-5
    )


def test_rejected_upload_is_timed_but_never_counted_as_a_prediction(client):
    before = scrape(client)
    resp = post_image(client, b"\xff\xd8\xff\xe0" + b"\x00" * 64)  # a JPEG signature, no JPEG
    assert resp.status_code == 422
    after = scrape(client)
    total = sum(series(after, "imgclass_predictions_total").values())
    assert total == sum(series(before, "imgclass_predictions_total").values())
    stage = "imgclass_stage_duration_seconds_count"
    assert value(after, stage, stage="decode") - value(before, stage, stage="decode") == 1
    assert value(after, stage, stage="inference") == value(before, stage, stage="inference")


def test_model_readiness_and_disk_describe_the_server(client, app):
    samples = scrape(client)
    models = client.get("/api/v1/models").get_json()["models"]
    info = series(samples, "imgclass_model_info")
    for model in models:  # the primary and the fallback, told apart by their role
        labels = {"name": model["name"], "version": model["version"], "sha256": model["sha256"]}
        assert info[frozenset({**labels, "role": model["role"]}.items())] == 1
    assert sorted(m["role"] for m in models) == ["fallback", "primary"]
    assert len(info) == 2
    assert value(samples, "imgclass_ready", check="model") == 1
    assert value(samples, "imgclass_ready", check="database") == 1
    free = value(samples, "imgclass_data_dir_free_bytes")
    total = value(samples, "imgclass_data_dir_total_bytes")
    assert 0 < free <= total


def test_readiness_gauge_reports_a_missing_model(settings, tmp_path):
    broken = create_app(settings.model_copy(update={"model_dir": tmp_path / "no-models"}))
    try:
        client = broken.test_client()
        samples = scrape(client)  # no /readyz call needed: the scrape runs the checks
        assert value(samples, "imgclass_ready", check="model") == 0
        assert value(samples, "imgclass_ready", check="database") == 1
        assert client.get("/readyz").status_code == 503
        assert post_image(client, b"\xff\xd8").status_code == 503
    finally:
        services(broken).engine.dispose()


def test_images_in_flight_rises_and_falls(client):
    base = value(scrape(client), "imgclass_images_in_flight")
    with metrics.images_in_flight(3):
        assert value(scrape(client), "imgclass_images_in_flight") == base + 3
    assert value(scrape(client), "imgclass_images_in_flight") == base
    with pytest.raises(RuntimeError), metrics.images_in_flight(2):
        raise RuntimeError("a failing request")
    assert value(scrape(client), "imgclass_images_in_flight") == base


def test_class_label_budget_counts_the_rest_as_other(settings, cat_jpeg, coffee_jpeg):
    app = create_app(settings.model_copy(update={"metrics_top_classes": 1}))
    try:
        client = app.test_client()
        before = scrape(client)
        first = post_image(client, cat_jpeg, query="?top_k=1").get_json()
        second = post_image(client, coffee_jpeg, query="?top_k=1").get_json()
        after = scrape(client)
    finally:
        services(app).engine.dispose()
    cat = first["results"][0]["predictions"][0]["label"]
    coffee = second["results"][0]["predictions"][0]["label"]
    assert cat != coffee

    def delta(label):
        name = "imgclass_predictions_total"
        return value(after, name, class_name=label) - value(before, name, class_name=label)

    assert (delta(cat), delta(coffee), delta("other")) == (1, 0, 1)


def test_class_labels_stay_within_the_budget_under_threads():
    labels = ClassLabels(10)
    seen: list[str] = []
    lock = threading.Lock()

    def work(offset: int) -> None:
        for i in range(200):
            label = labels(f"class {(i + offset) % 100}")
            with lock:
                seen.append(label)

    threads = [threading.Thread(target=work, args=(n * 7,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    named = set(seen) - {"other"}
    assert len(named) == 10 and "other" in seen
    for name in named:  # a class that got its name keeps it
        assert labels(name) == name
    assert labels("class never seen") == "other"


def test_class_labels_share_one_set_through_their_file(tmp_path):
    path = tmp_path / "class-labels.jsonl"
    first, second = ClassLabels(3, path), ClassLabels(3, path)  # two workers of one server
    assert [first("tabby"), first("espresso")] == ["tabby", "espresso"]
    assert second.label("tabby") == "tabby"  # named by the other worker
    assert second.label("rocket") == "other"  # label() never names a class
    with path.open("a") as fh:
        fh.write('"volc')  # a writer killed mid-line
    assert second("rocket") == "rocket"
    assert [second("volcano"), first("volcano"), first("daisy")] == ["other"] * 3
    assert first.named() == second.named() == {"tabby", "espresso", "rocket"}


def test_functions_for_cache_fallback_drift_feedback_and_backups(client):
    before = scrape(client)
    metrics.cache_hit()
    metrics.cache_hit()
    metrics.cache_miss()
    metrics.fallback_activated("efficientnet-lite0-int8")
    metrics.fallback_available("spare-model")
    metrics.set_breaker_state("efficientnet-lite0-fp32", "open")
    metrics.set_breaker_state("efficientnet-lite0-int8", "half_open")
    metrics.set_drift_psi("brightness", 0.31)
    metrics.set_drift_threshold(0.25)
    metrics.feedback_received(correct=True, replaced=False)
    metrics.feedback_received(correct=False, replaced=False)
    metrics.feedback_received(correct=False, replaced=True)
    metrics.set_last_backup(1_700_000_000.5)
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("imgclass_cache_hits_total") == 2
    assert delta("imgclass_cache_misses_total") == 1
    assert delta("imgclass_fallback_activations_total", model="efficientnet-lite0-int8") == 1
    spare = frozenset({"model": "spare-model"}.items())
    assert series(after, "imgclass_fallback_activations_total")[spare] == 0  # exported at 0
    state = "imgclass_circuit_breaker_state"
    assert value(after, state, model="efficientnet-lite0-fp32") == 2
    assert value(after, state, model="efficientnet-lite0-int8") == 1
    assert value(after, "imgclass_drift_psi", feature="brightness") == pytest.approx(0.31)
    assert value(after, "imgclass_drift_threshold") == pytest.approx(0.25)
    assert delta("imgclass_feedback_total", outcome="correct", replaced="false") == 1
    assert delta("imgclass_feedback_total", outcome="incorrect", replaced="false") == 1
    assert delta("imgclass_feedback_total", outcome="incorrect", replaced="true") == 1
    assert value(after, "imgclass_backup_last_success_timestamp_seconds") == 1_700_000_000.5
    metrics.set_breaker_state("efficientnet-lite0-fp32", "closed")
    assert value(scrape(client), state, model="efficientnet-lite0-fp32") == 0


def test_feedback_outcomes_exist_before_any_feedback(client):
    samples = scrape(client)
    outcomes = {
        (dict(labels)["outcome"], dict(labels)["replaced"])
        for labels in series(samples, "imgclass_feedback_total")
    }
    assert outcomes == {(o, r) for o in ("correct", "incorrect") for r in ("false", "true")}


def test_bad_stage_and_breaker_state_are_refused():
    with pytest.raises(ValueError, match="unknown stage"):
        metrics.stage("thinking")
    with pytest.raises(ValueError, match="half_open"):
        metrics.set_breaker_state("m", "half-open")


def _file(data: bytes):
    import io

    return io.BytesIO(data)


def test_backup_age_comes_from_the_newest_backup_at_each_scrape(app, client):
    from imgclass.warehouse import backup

    svc = services(app)
    manifest = backup.Backups(svc.settings, svc.engine).create()
    samples = scrape(client)
    newest = value(samples, "imgclass_backup_last_success_timestamp_seconds")
    assert newest == pytest.approx(manifest.created_at.timestamp(), abs=1)
