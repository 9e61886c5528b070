"""Accuracy from feedback as Prometheus gauges: per model and per predicted class.

A counter of feedback cannot give accuracy: a second feedback for an image
replaces the first in the warehouse, but a counter counts both (six feedbacks
for one image, three of each outcome, read as 50% where the warehouse says
0% or 100%). So the figures come from the warehouse, where each prediction has
at most one feedback row (``warehouse.feedback.accuracy``): the predictions of
the last ``accuracy_window_hours`` that have feedback, grouped by model and by
predicted class, which is what the cube's ``accuracy`` measure computes.

The background monitor (``ops/drift.DriftMonitor``) calls ``update`` every
``drift_interval_s`` in each worker; the gauges keep the newest value of a live
worker. Labels stay bounded: the models of the window (a handful), and the
classes ``imgclass_predictions_total`` names (``ops/class_labels``, at most
``metrics_top_classes``) plus ``other`` for the rest. A labelled series cannot
be removed in multiprocess mode, so a model that leaves the window, or a named
class without feedback in it, reads NaN with 0 events rather than a stale figure.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from imgclass.config import Settings
from imgclass.ops import metrics
from imgclass.ops.class_labels import OTHER_CLASS
from imgclass.warehouse.feedback import accuracy
from imgclass.warehouse.recorder import utc_now


@dataclass(frozen=True)
class Figure:
    feedback: int  # predictions with feedback
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.feedback if self.feedback else math.nan


@dataclass(frozen=True)
class AccuracyFigures:
    since: datetime  # the window's start (naive UTC, by prediction time)
    by_model: dict[tuple[str, str], Figure] = field(default_factory=dict)  # (name, version)
    by_class: dict[str, Figure] = field(default_factory=dict)  # named class or "other"


def compute(
    engine: Engine, *, window_hours: float, named: frozenset[str], now: datetime | None = None
) -> AccuracyFigures:
    """Accuracy over the predictions since ``now − window_hours``; classes outside ``named``
    are summed into ``other``, and every named class and ``other`` is present."""
    since = (now or utc_now()) - timedelta(hours=window_hours)
    by_model = {
        (row.group[0], row.group[1]): Figure(row.feedback, row.correct)
        for row in accuracy(engine, "model", start=since)
    }
    sums = {name: [0, 0] for name in (*sorted(named), OTHER_CLASS)}
    for row in accuracy(engine, "predicted_class", start=since):
        class_name = row.group[1]
        total = sums[class_name if class_name in named else OTHER_CLASS]
        total[0] += row.feedback
        total[1] += row.correct
    by_class = {name: Figure(n, ok) for name, (n, ok) in sums.items()}
    return AccuracyFigures(since, by_model, by_class)


class AccuracyGauges:
    """Computes and publishes the accuracy gauges; one per process."""

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self._published_models: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def update(self) -> AccuracyFigures:
        figures = compute(
            self.engine,
            window_hours=self.settings.accuracy_window_hours,
            named=metrics.named_classes(),
        )
        with self._lock:
            for (name, version), figure in figures.by_model.items():
                metrics.set_model_accuracy(name, version, figure.feedback, figure.accuracy)
            for name, version in self._published_models - figures.by_model.keys():
                metrics.set_model_accuracy(name, version, 0, math.nan)  # left the window
            self._published_models |= figures.by_model.keys()
            for class_name, figure in figures.by_class.items():
                metrics.set_class_accuracy(class_name, figure.feedback, figure.accuracy)
        return figures
