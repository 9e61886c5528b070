"""The accuracy gauges: computed from the warehouse, equal to the cube, deaf to replacements."""

from __future__ import annotations

import io
import math
import time

import pytest
from sqlalchemy import select

from imgclass.app import create_app, services
from imgclass.warehouse.cube import Cube, CubeQuery
from imgclass.warehouse.schema import class_dim
from tests.conftest import ESPRESSO, make_settings
from tests.support.prom import parse, value

TABBY, CUP = 281, 968


@pytest.fixture
def app(tmp_path, model_dir):
    # One named class: the cat's (predicted first); the coffee's classes are "other".
    app = create_app(make_settings(tmp_path / "data", model_dir, metrics_top_classes=1))
    yield app
    services(app).engine.dispose()


def predict(client, *files) -> dict:
    data = {"image": [(io.BytesIO(content), name) for name, content in files]}
    resp = client.post("/api/v1/predict?top_k=1", data=data, content_type="multipart/form-data")
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def feedback(client, request_id: str, class_id: int, index: int = 0) -> dict:
    body = {"request_id": request_id, "class_id": class_id, "index": index}
    resp = client.post("/api/v1/feedback", json=body)
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.get_json()


def model_value(samples, metric: str, labels: dict) -> float:
    # Not tests.support.prom.value: these labels are called name and version, like
    # imgclass_model_info's, and "name" is that function's own first parameter.
    return samples.get((metric, frozenset(labels.items())), 0.0)


def gauges(app, client):
    """Recompute as the background monitor does, then read /metrics."""
    figures = services(app).accuracy.update()
    return figures, parse(client.get("/metrics").get_data(as_text=True))


def test_replaced_feedback_does_not_change_the_accuracy(app, client, cat_jpeg):
    cat = predict(client, ("cat.jpg", cat_jpeg))
    model = cat["model"]
    labels = {"name": model["name"], "version": model["version"]}
    predicted = cat["results"][0]["predictions"][0]
    wrong = ESPRESSO

    feedback(client, cat["request_id"], wrong)
    _, first = gauges(app, client)
    assert model_value(first, "imgclass_model_accuracy_ratio", labels) == 0.0
    assert model_value(first, "imgclass_model_feedback_events", labels) == 1

    # Five more for the same image, alternating, the last one wrong again: the warehouse
    # keeps one row, so the figure stays 0 % of 1 (the counter saw 3 right, 3 wrong).
    for class_id in (predicted["class_id"], wrong) * 2 + (wrong,):
        assert feedback(client, cat["request_id"], class_id)["replaced"] is True
    _, after = gauges(app, client)
    assert model_value(after, "imgclass_model_accuracy_ratio", labels) == 0.0
    assert model_value(after, "imgclass_model_feedback_events", labels) == 1
    name = predicted["label"]
    assert value(after, "imgclass_class_accuracy_ratio", class_name=name) == 0.0
    assert value(after, "imgclass_class_feedback_events", class_name=name) == 1

    def counted(outcome, replaced):
        labels = {"outcome": outcome, "replaced": replaced}
        return value(after, "imgclass_feedback_total", **labels) - value(
            first, "imgclass_feedback_total", **labels
        )

    # The traffic counter still counts every submission, and says which were replacements.
    assert (counted("correct", "true"), counted("incorrect", "true")) == (2, 3)


def test_per_model_and_per_class_figures_equal_the_cubes_accuracy(
    app, client, cat_jpeg, coffee_jpeg
):
    cat = predict(client, ("cat.jpg", cat_jpeg))
    cups = predict(client, ("a.jpg", coffee_jpeg), ("b.jpg", coffee_jpeg), ("c.jpg", cat_jpeg))
    predict(client, ("no-feedback.jpg", coffee_jpeg))
    feedback(client, cat["request_id"], TABBY)
    feedback(client, cups["request_id"], ESPRESSO, index=0)
    feedback(client, cups["request_id"], CUP, index=1)
    feedback(client, cups["request_id"], TABBY, index=2)
    figures, samples = gauges(app, client)

    engine = services(app).engine
    cube = Cube(engine)

    def cube_rows(dimension):
        query = CubeQuery(
            group_by=(dimension,),
            measures=("feedback_count", "accuracy"),
            time_from=figures.since,
        )
        return [r for r in cube.run(query).rows if r["feedback_count"]]

    by_model = cube_rows("model")
    assert len(by_model) == 1
    for row in by_model:
        name, version = row["model"].split("@")
        labels = {"name": name, "version": version}
        events = model_value(samples, "imgclass_model_feedback_events", labels)
        assert events == row["feedback_count"]
        ratio = model_value(samples, "imgclass_model_accuracy_ratio", labels)
        assert ratio == pytest.approx(row["accuracy"])

    # The cube names classes by their comma-free label, the metrics by their full name.
    with engine.connect() as conn:
        full_name = dict(conn.execute(select(class_dim.c.label, class_dim.c.class_name)).all())
    named = {cat["results"][0]["predictions"][0]["label"]}
    by_class = {full_name[r["class"]]: r for r in cube_rows("class")}
    assert named < by_class.keys()  # the coffee's classes are there too, as "other"
    for name in named:
        row = by_class[name]
        assert (
            value(samples, "imgclass_class_feedback_events", class_name=name)
            == (row["feedback_count"])
        )
        assert value(samples, "imgclass_class_accuracy_ratio", class_name=name) == pytest.approx(
            row["accuracy"]
        )
    rest = [r for name, r in by_class.items() if name not in named]
    n = sum(r["feedback_count"] for r in rest)
    correct = sum(r["feedback_count"] * r["accuracy"] for r in rest)
    assert value(samples, "imgclass_class_feedback_events", class_name="other") == n == 2
    assert value(samples, "imgclass_class_accuracy_ratio", class_name="other") == pytest.approx(
        correct / n
    )
    assert figures.by_class.keys() == named | {"other"}  # bounded: the named classes + other


def test_figures_outside_the_window_read_nan_not_a_stale_value(app, client, cat_jpeg):
    cat = predict(client, ("cat.jpg", cat_jpeg))
    model = cat["model"]
    labels = {"name": model["name"], "version": model["version"]}
    name = cat["results"][0]["predictions"][0]["label"]
    feedback(client, cat["request_id"], TABBY)
    _, inside = gauges(app, client)
    assert model_value(inside, "imgclass_model_feedback_events", labels) == 1

    services(app).settings.accuracy_window_hours = 1e-6  # 3.6 ms: the prediction is older
    time.sleep(0.01)
    figures, outside = gauges(app, client)
    assert figures.by_model == {}
    assert math.isnan(model_value(outside, "imgclass_model_accuracy_ratio", labels))
    assert model_value(outside, "imgclass_model_feedback_events", labels) == 0
    assert math.isnan(value(outside, "imgclass_class_accuracy_ratio", class_name=name))
    assert math.isnan(value(outside, "imgclass_class_accuracy_ratio", class_name="other"))
