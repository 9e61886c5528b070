"""The PSI computation and the warehouse windows, without the model (fast).

Numbers are checked against hand computations; the windows against events
written through the real Recorder into a SQLite file.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from imgclass.config import Settings
from imgclass.ops.drift import (
    EPSILON,
    INSUFFICIENT,
    OTHER,
    categorical_bins,
    compare_windows,
    compute_report,
    continuous_bins,
    psi,
    quantile_edges,
)
from imgclass.warehouse.db import make_engine
from imgclass.warehouse.drift_data import Window, recent_window, reference_window
from imgclass.warehouse.migrate import upgrade
from imgclass.warehouse.recorder import (
    ClassFacts,
    Event,
    ImageFacts,
    ModelFacts,
    Recorder,
    Requester,
)

START = datetime(2026, 11, 1, 8, 0, 0)


def test_psi_matches_the_formula():
    q, p = [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]
    expected = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.4 - 0.3) * math.log(0.4 / 0.3)
    assert psi(q, p) == pytest.approx(expected)
    assert psi(q, q) == 0
    assert psi(q, p) == pytest.approx(psi(p, q))  # symmetric


def test_an_empty_bin_gives_a_large_finite_index():
    value = psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5])
    assert math.isfinite(value)
    # Each emptied bin contributes about 0.5 · ln(0.5 / EPSILON).
    assert value == pytest.approx(2 * 0.5 * math.log(0.5 / EPSILON), rel=0.01)


def test_quantile_bins_have_equal_reference_shares():
    rng = np.random.default_rng(0)
    reference = rng.normal(120, 30, 1000)
    table = continuous_bins(reference, rng.normal(120, 30, 800), 10)
    assert len(table) == 10
    assert [b.reference_count for b in table] == [100] * 10
    assert table[0].lower is None and table[-1].upper is None
    assert sum(b.recent_count for b in table) == 800


def test_a_point_mass_gets_its_own_bin_so_shifts_either_way_show():
    # Every reference image is 640 wide: smaller and larger images must both count.
    edges = quantile_edges([640.0] * 300, 10)
    assert len(edges) == 2
    table = continuous_bins([640.0] * 300, [640.0] * 200 + [320.0] * 50 + [800.0] * 50, 10)
    assert [(b.label, b.reference_count, b.recent_count) for b in table] == [
        ("< 640", 0, 50),
        ("= 640", 300, 200),
        ("> 640", 0, 50),
    ]
    larger_only = continuous_bins([640.0] * 300, [640.0] * 200 + [800.0] * 100, 10)
    assert psi([b.reference_share for b in larger_only], [b.recent_share for b in larger_only]) > 1


def test_categories_keep_the_most_frequent_and_lump_the_rest():
    reference = ["JPEG"] * 60 + ["PNG"] * 30 + ["GIF"] * 6 + ["BMP"] * 4
    recent = ["JPEG"] * 50 + ["PNG"] * 20 + ["TIFF"] * 30  # TIFF never seen before
    table = categorical_bins(reference, recent, bins=3)
    assert [(b.label, b.reference_count, b.recent_count) for b in table] == [
        ("JPEG", 60, 50),
        ("PNG", 30, 20),
        (OTHER, 10, 30),
    ]


def _window(n: int, *, brightness: float, class_id: int = 1, start_id: int = 0) -> Window:
    rng = np.random.default_rng(n + start_id)
    return Window(
        "test",
        event_ids=list(range(start_id, start_id + n)),
        event_times=[START] * n,
        widths=[640] * n,
        heights=[480] * n,
        brightness=list(rng.normal(brightness, 20, n)),
        formats=["JPEG"] * n,
        class_ids=[class_id] * n,
        class_names={class_id: "goldfish"},
        confidences=list(rng.uniform(0.3, 0.9, n)),
    )


def test_too_few_events_is_reported_not_zero():
    report = compare_windows(
        _window(50, brightness=120), _window(10, brightness=120), min_events=20
    )
    assert report.status == INSUFFICIENT
    assert "recent window 10" in report.message and "at least 20" in report.message
    assert all(f.psi is None and f.over_threshold is None for f in report.features)
    assert report.drifted == []
    body = report.to_dict()
    assert body["features"][0]["psi"] is None and body["status"] == "insufficient_data"


def test_report_flags_only_the_shifted_feature():
    reference = _window(1000, brightness=130)
    report = compare_windows(reference, _window(500, brightness=40, start_id=1000), min_events=100)
    assert report.status == "drift" and report.drifted == ["brightness"]
    assert report.feature("brightness").psi > 0.2
    assert report.feature("width").psi == pytest.approx(0)
    same = compare_windows(reference, _window(500, brightness=130, start_id=5000), min_events=100)
    assert same.status == "ok" and same.drifted == []
    assert same.feature("brightness").psi < same.feature("brightness").expected_noise * 3


def test_missing_values_count_per_feature():
    reference, recent = _window(300, brightness=120), _window(300, brightness=120, start_id=300)
    recent.brightness[:250] = [None] * 250  # e.g. events recorded before brightness existed
    report = compare_windows(reference, recent, min_events=100)
    feature = report.feature("brightness")
    assert (feature.status, feature.recent_events, feature.psi) == (INSUFFICIENT, 50, None)
    assert report.status == "ok" and "too few recorded values for: brightness" in report.message


# -- windows from the warehouse ------------------------------------------------

ALICE = Requester(1, "alice", "10.0.0.1", "test")
MODEL = ModelFacts("efficientnet-lite0", "0.1.0+fp32", "ab" * 32)


def _event(i: int, when: datetime, *, ok: bool = True) -> Event:
    if not ok:
        return Event(f"fail{i:08d}", when, ALICE, "predict", 415, 1.0, error_code="x")
    return Event(
        request_id=f"req{i:08d}",
        event_time=when,
        requester=ALICE,
        endpoint="predict",
        status_code=200,
        time_taken_ms=10.0,
        image=ImageFacts(f"{i:064x}", f"{i}.jpg", 1000, 300 + i, 200, "JPEG", 100.0),
        predicted=ClassFacts(i % 5, f"class {i % 5}", None),
        model=MODEL,
        confidence=0.5,
    )


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    upgrade(engine)
    recorder = Recorder(engine)
    # One successful event a minute for 100 minutes, with a failure every 10th minute.
    recorder.record([_event(i, START + timedelta(minutes=i), ok=i % 10 != 5) for i in range(100)])
    yield engine
    engine.dispose()


def test_reference_is_the_first_successful_events(engine):
    window = reference_window(engine, first_events=20)
    assert len(window) == 20
    assert window.widths[0] == 300 and 305 not in window.widths  # failures are left out
    assert window.class_names[0] == "class 0"


def test_reference_by_date_range(engine):
    window = reference_window(
        engine, start=START + timedelta(minutes=10), end=START + timedelta(minutes=20)
    )
    assert sorted(window.widths) == [310, 311, 312, 313, 314, 316, 317, 318, 319]


def test_recent_is_the_last_events_after_the_reference(engine):
    reference = reference_window(engine, first_events=60)
    assert max(reference.widths) == 366  # 60 successes: minutes 0-66 less 7 failures
    everything = recent_window(engine, last_events=1000, after_event_id=reference.last_event_id)
    assert len(everything) == 30 and min(everything.widths) == 367
    assert not set(everything.event_ids) & set(reference.event_ids)
    last = recent_window(engine, last_events=10, after_event_id=reference.last_event_id)
    assert sorted(last.widths) == [389, 390, 391, 392, 393, 394, 396, 397, 398, 399]


def test_recent_by_minutes(engine):
    now = START + timedelta(minutes=99, seconds=30)
    window = recent_window(engine, minutes=10, now=now)
    assert sorted(window.widths) == [390, 391, 392, 393, 394, 396, 397, 398, 399]


def test_compute_report_follows_the_settings(engine, tmp_path):
    base = {"data_dir": tmp_path, "drift_min_events": 5}
    report = compute_report(engine, Settings(**base, drift_reference_events=50))
    assert report.reference.events == 50
    assert report.recent.events == 40  # 90 successes, minus the reference
    assert report.recent.description == "last 500 successful events"
    # Widths grow with time, so the later window has drifted in width and nothing else.
    assert report.drifted == ["width"]

    ranged = Settings(
        **base,
        drift_reference_start=START,
        drift_reference_end=START + timedelta(minutes=30),
        drift_recent_minutes=30,
    )
    report = compute_report(engine, ranged, now=START + timedelta(minutes=100))
    assert (report.reference.events, report.recent.events) == (27, 27)
    assert report.reference.last_event_time < START + timedelta(minutes=30)

    filling = compute_report(engine, Settings(**base, drift_reference_events=500))
    assert filling.reference.events == 90 and filling.recent.events == 0
    assert filling.status == INSUFFICIENT and "still filling" in filling.recent.description


def test_settings_validate_the_reference_range(tmp_path):
    with pytest.raises(ValueError, match="both"):
        Settings(data_dir=tmp_path, drift_reference_start=START)
    with pytest.raises(ValueError, match="before"):
        Settings(data_dir=tmp_path, drift_reference_start=START, drift_reference_end=START)
    zoned = Settings(
        data_dir=tmp_path,
        drift_reference_start="2026-11-01T10:00:00+02:00",
        drift_reference_end="2026-11-02T00:00:00Z",
    )
    assert zoned.drift_reference_start == datetime(2026, 11, 1, 8, 0)
