"""The background drift thread (and the accuracy gauges it refreshes): it publishes, survives
a failing warehouse, and stops."""

from __future__ import annotations

import logging
import threading
import time

from imgclass.app import create_app, services
from imgclass.ops.accuracy import AccuracyGauges
from imgclass.ops.drift import DriftMonitor
from imgclass.ops.metrics import REGISTRY
from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import upgrade


def wait_for(condition, timeout: float = 30.0) -> bool:
    """Poll ``condition`` until it holds (a wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def drift_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "imgclass-drift"]


def test_create_app_starts_the_thread_only_when_asked(settings, admin_key):
    # Other tests in this process may have left apps (and their threads) behind.
    before = set(drift_threads())
    quiet = create_app(settings)  # the test settings turn it off
    assert services(quiet).drift.latest is None and set(drift_threads()) == before

    app = create_app(settings.model_copy(update={"drift_threshold": 0.35, "drift_interval_s": 0.1}))
    monitor = services(app).drift
    try:
        assert wait_for(lambda: monitor.latest is not None)
        first = monitor.latest
        assert first.threshold == 0.35 and first.status == "insufficient_data"
        assert REGISTRY.get_sample_value("imgclass_drift_threshold") == 0.35
        assert wait_for(lambda: monitor.latest.computed_at > first.computed_at)  # it repeats
        # The endpoint serves the background report rather than computing its own.
        resp = app.test_client().get(
            "/api/v1/drift", headers={"Authorization": f"Bearer {admin_key}"}
        )
        assert resp.get_json()["threshold"] == 0.35
    finally:
        monitor.stop()
    assert set(drift_threads()) == before


def test_a_failing_update_is_logged_and_the_thread_recovers(settings, tmp_path, caplog):
    engine = make_engine(f"sqlite:///{tmp_path / 'late.db'}")  # no tables yet
    fast = settings.model_copy(update={"drift_interval_s": 0.05})
    accuracy = AccuracyGauges(engine, fast)
    computed = []

    def accuracy_update():  # the accuracy gauges ride on the same thread
        computed.append(accuracy.update())

    monitor = DriftMonitor(engine, fast, also=[accuracy_update])
    caplog.set_level(logging.ERROR, logger="imgclass.ops.drift")
    monitor.start()
    try:
        assert wait_for(lambda: "drift update failed" in caplog.text)
        assert wait_for(
            lambda: "background update" in caplog.text and "accuracy_update" in caplog.text
        )
        assert monitor.latest is None and not computed
        upgrade(engine)  # the warehouse becomes readable: the next round succeeds
        assert wait_for(lambda: monitor.latest is not None and computed)
        assert monitor.latest.status == "insufficient_data"
        assert computed[-1].by_model == {}  # no feedback yet
    finally:
        monitor.stop()
        engine.dispose()
