"""Drift end to end: real images through the real predict path, PSI from the warehouse.

A reference window of 300 varied images (crops of scikit-image photos, sizes,
brightness and formats drawn at random) and an unshifted recent window (same
distribution, other samples) are built once; each shift test copies that
warehouse and adds a shifted window on top. Window sizes are chosen so that an
unshifted window's expected PSI, (B − 1)(1/n + 1/m) = 0.06, is well below the
0.2 threshold.
"""

from __future__ import annotations

import sqlite3

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from imgclass.app import create_app, services
from imgclass.config import Settings
from imgclass.ops.drift import FEATURES
from imgclass.ops.metrics import REGISTRY
from tests.support.image_stream import image_stream, post_stream

pytestmark = pytest.mark.slow

WINDOW = 300
THRESHOLD = 0.2


def gauges() -> dict[str, float]:
    """The drift gauges as a Prometheus scrape shows them (feature -> PSI, plus threshold)."""
    values = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for sample in family.samples:
            if sample.name == "imgclass_drift_psi":
                values[sample.labels["feature"]] = sample.value
            elif sample.name == "imgclass_drift_threshold":
                values["threshold"] = sample.value
    return values


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, model_dir):
    """A warehouse holding a reference window and an unshifted recent window."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("drift") / "data",
        model_dir=model_dir,
        drift_interval_s=0,
        drift_reference_events=WINDOW,
        drift_recent_events=WINDOW,
        drift_min_events=WINDOW // 2,
        drift_threshold=THRESHOLD,
    )
    app = create_app(settings)
    client = app.test_client()
    post_stream(client, image_stream(WINDOW, seed=1))
    post_stream(client, image_stream(WINDOW, seed=2))
    services(app).engine.dispose()
    return settings, settings.admin_token_path.read_text().strip()


def app_on_copy(baseline, tmp_path):
    """An app on a copy of the baseline warehouse (SQLite's online backup)."""
    settings, _ = baseline
    target = tmp_path / "data"
    target.mkdir()
    source = sqlite3.connect(settings.data_dir / "imgclass.db")
    copy = sqlite3.connect(target / "imgclass.db")
    with copy:
        source.backup(copy)
    source.close()
    copy.close()
    app = create_app(settings.model_copy(update={"data_dir": target}))
    return app, app.test_client()


def get_drift(client, key, query=""):
    resp = client.get(f"/api/v1/drift{query}", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def by_feature(body) -> dict[str, dict]:
    return {f["feature"]: f for f in body["features"]}


def test_an_unshifted_stream_stays_below_the_threshold(baseline, tmp_path):
    app, client = app_on_copy(baseline, tmp_path)
    body = get_drift(client, baseline[1])
    assert body["status"] == "ok", body["message"]
    assert (body["reference"]["events"], body["recent"]["events"]) == (WINDOW, WINDOW)
    assert body["threshold"] == THRESHOLD and body["drifted"] == []
    features = by_feature(body)
    assert list(features) == list(FEATURES)
    for name, feature in features.items():
        assert feature["psi"] is not None and feature["psi"] < THRESHOLD, name
        assert feature["over_threshold"] is False and feature["status"] == "ok"
        assert feature["reference_events"] == feature["recent_events"] == WINDOW
        shares = [b["reference_share"] for b in feature["bins"]]
        assert sum(shares) == pytest.approx(1, abs=1e-5)
    # The stream really varies: several formats, sizes and classes in the reference.
    assert {b["label"] for b in features["format"]["bins"]} >= {"JPEG", "PNG", "WEBP"}
    assert len(features["class"]["bins"]) == 10 and len(features["width"]["bins"]) == 10

    scraped = gauges()
    assert scraped["threshold"] == THRESHOLD
    for name in FEATURES:
        assert scraped[name] == pytest.approx(features[name]["psi"], abs=1e-6)
        assert scraped[name] < THRESHOLD
    services(app).engine.dispose()


def test_dark_images_push_brightness_over_the_threshold(baseline, tmp_path):
    app, client = app_on_copy(baseline, tmp_path)
    before = get_drift(client, baseline[1])  # the first call computes a report
    assert before["status"] == "ok"

    post_stream(client, image_stream(WINDOW, seed=3, brightness=(0.08, 0.25)))
    cached = get_drift(client, baseline[1])  # no background thread: still the old report
    assert cached["computed_at"] == before["computed_at"] and cached["status"] == "ok"

    body = get_drift(client, baseline[1], "?fresh=true")
    assert body["status"] == "drift" and "brightness" in body["drifted"]
    features = by_feature(body)
    brightness = features["brightness"]
    assert brightness["psi"] > THRESHOLD and brightness["over_threshold"] is True
    # The dark images fill the lowest reference bins.
    low = brightness["bins"][0]
    assert low["recent_share"] > 0.5 > low["reference_share"]
    # What did not change stays below: the images' sizes and formats.
    for name in ("width", "height", "format"):
        assert features[name]["psi"] < THRESHOLD, name

    scraped = gauges()
    assert scraped["brightness"] > scraped["threshold"] == THRESHOLD
    assert scraped["width"] < THRESHOLD
    services(app).engine.dispose()


def test_a_single_class_pushes_prediction_drift_over_the_threshold(baseline, tmp_path):
    app, client = app_on_copy(baseline, tmp_path)
    post_stream(client, image_stream(WINDOW, seed=4, sources=("chelsea",)))
    body = get_drift(client, baseline[1], "?fresh=true")
    features = by_feature(body)
    assert features["class"]["psi"] > THRESHOLD and "class" in body["drifted"]
    # Nearly every recent image is the cat: its class, rare in the reference, dominates.
    cat = next(b for b in features["class"]["bins"] if b["label"] == "285 Egyptian cat")
    assert cat["recent_share"] > 0.6 and cat["reference_share"] < 0.2
    assert features["confidence"]["psi"] > THRESHOLD  # the model is surer about a clear cat
    for name in ("width", "height", "format"):
        assert features[name]["psi"] < THRESHOLD, name
    assert gauges()["class"] > THRESHOLD
    services(app).engine.dispose()
