"""Drift: Population Stability Index (PSI) of a recent window against a reference window.

Six features are compared, each binned on the *reference* window:

- data drift: input ``width``, ``height``, ``brightness`` (mean luma 0-255 of the
  crop the model saw) and ``format`` (JPEG, PNG, …);
- prediction drift: the predicted ``class`` and its ``confidence``.

For each feature, with reference shares q_i and recent shares p_i over the same
bins, PSI = Σ (p_i − q_i) · ln(p_i / q_i). Rule of thumb: below 0.1 stable,
0.1–0.2 a moderate change, above 0.2 (the default threshold) a significant shift.

Binning (docs/ARCHITECTURE.md has the reasoning):

- continuous features get up to ``bins`` quantile bins of the reference (the
  outer two open-ended); a value that alone holds 1/bins of the reference (all
  images 640 wide) gets its own bin, so a shift to either side of it shows;
- categorical features keep the reference's ``bins − 1`` most frequent
  categories and lump the rest, and anything new in the recent window, into
  ``other``;
- an empty bin would make ln(p/q) infinite, so shares are floored at
  ``EPSILON`` and renormalised before the index is computed (the reported
  shares are the raw ones).

Two finite samples of the *same* distribution still differ: their expected PSI
is about (B − 1)(1/n + 1/m) for B bins and windows of n and m events. Each
feature reports that ``expected_noise`` so a reader can tell a shift from a
window that is too small; ``drift_min_events`` refuses to compute an index at
all on windows so small that noise alone would cross the threshold.

``publish`` sets the Prometheus gauges; ``DriftMonitor`` recomputes in a
background thread and keeps the latest report for ``GET /api/v1/drift``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import Engine

from imgclass.config import Settings
from imgclass.ops import metrics
from imgclass.warehouse.drift_data import Window, recent_window, reference_window
from imgclass.warehouse.recorder import utc_now

log = logging.getLogger(__name__)

EPSILON = 1e-4  # floor for a bin's share (an empty bin would make the index infinite)
OTHER = "other"

OK, DRIFT, INSUFFICIENT = "ok", "drift", "insufficient_data"
DATA, PREDICTION = "data", "prediction"
CONTINUOUS, CATEGORICAL = "continuous", "categorical"

# name -> (what it watches, how it is binned); the order of the report.
FEATURES: dict[str, tuple[str, str]] = {
    "width": (DATA, CONTINUOUS),
    "height": (DATA, CONTINUOUS),
    "brightness": (DATA, CONTINUOUS),
    "format": (DATA, CATEGORICAL),
    "class": (PREDICTION, CATEGORICAL),
    "confidence": (PREDICTION, CONTINUOUS),
}


# ---------------------------------------------------------------------------
# Report values
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bin:
    label: str
    reference_count: int
    recent_count: int
    reference_share: float
    recent_share: float
    lower: float | None = None  # continuous bins: [lower, upper); None = unbounded
    upper: float | None = None


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str  # "data" or "prediction"
    binning: str  # "continuous" or "categorical"
    status: str  # "ok", "drift" or "insufficient_data"
    psi: float | None  # None when a window has too few values
    over_threshold: bool | None
    reference_events: int  # events with a value for this feature
    recent_events: int
    expected_noise: float | None  # PSI expected between two samples of one distribution
    bins: list[Bin] = field(default_factory=list)


@dataclass(frozen=True)
class WindowSummary:
    description: str
    events: int
    first_event_time: datetime | None
    last_event_time: datetime | None


@dataclass(frozen=True)
class DriftReport:
    computed_at: datetime  # naive UTC
    status: str  # "ok", "drift" (some feature over the threshold) or "insufficient_data"
    message: str
    threshold: float
    min_events: int
    reference: WindowSummary
    recent: WindowSummary
    features: list[FeatureDrift]

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.over_threshold]

    def feature(self, name: str) -> FeatureDrift:
        return next(f for f in self.features if f.feature == name)

    def to_dict(self) -> dict:
        """JSON-ready: datetimes as ISO 8601 UTC strings, PSI rounded to 6 places."""

        def convert(value):
            if isinstance(value, datetime):
                return value.isoformat() + "Z"
            if isinstance(value, float):
                return round(value, 6)
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, list):
                return [convert(v) for v in value]
            return value

        body = convert(asdict(self))
        body["drifted"] = self.drifted
        return body


# ---------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------


def psi(reference_shares: Sequence[float], recent_shares: Sequence[float]) -> float:
    """Population Stability Index of two distributions over the same bins.

    Shares are floored at ``EPSILON`` and renormalised first, so an empty bin
    on either side gives a large but finite contribution.
    """
    q = np.maximum(np.asarray(reference_shares, dtype=float), EPSILON)
    p = np.maximum(np.asarray(recent_shares, dtype=float), EPSILON)
    q /= q.sum()
    p /= p.sum()
    return float(np.sum((p - q) * np.log(p / q)))


def quantile_edges(reference: Sequence[float], bins: int) -> np.ndarray:
    """Inner bin edges for a continuous feature: the reference's quantiles at k/bins.

    Bins are (−inf, e_0), [e_0, e_1), …, [e_last, +inf). Ties merge quantiles
    into one edge; a value holding at least 1/bins of the reference (a point
    mass: every image 640 wide) gets a bin of its own, [v, v + 1 ulp), so a
    shift to either side of it still shows.
    """
    values = np.asarray(reference, dtype=float)
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    distinct, counts = np.unique(values, return_counts=True)
    heavy = distinct[counts * bins >= len(values)]
    return np.unique(np.concatenate([edges, heavy, np.nextafter(heavy, np.inf)]))


def _format_edge(value: float) -> str:
    return f"{value:.6g}"


def continuous_bins(reference: Sequence[float], recent: Sequence[float], bins: int) -> list[Bin]:
    edges = quantile_edges(reference, bins)
    # side="right": index k means edges[k-1] <= x < edges[k] (0: below the first edge).
    size = len(edges) + 1
    ref_counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=size)
    new_counts = np.bincount(np.searchsorted(edges, recent, side="right"), minlength=size)
    n_ref, n_new = len(reference), len(recent)
    result = []
    for k in range(size):
        lower = float(edges[k - 1]) if k > 0 else None
        upper = float(edges[k]) if k < len(edges) else None
        # A bin that starts right after a point mass v is shown as (v, …).
        after_mass = k >= 2 and edges[k - 1] == np.nextafter(edges[k - 2], np.inf)
        low = _format_edge(float(edges[k - 2]) if after_mass else (lower or 0.0))
        if lower is None:
            label = f"< {_format_edge(upper)}"
        elif upper is None:
            label = f"> {low}" if after_mass else f">= {low}"
        elif upper == np.nextafter(lower, np.inf):
            label = f"= {low}"
        else:
            label = (
                f"({low}, {_format_edge(upper)})"
                if after_mass
                else f"[{low}, {_format_edge(upper)})"
            )
        result.append(
            Bin(
                label=label,
                reference_count=int(ref_counts[k]),
                recent_count=int(new_counts[k]),
                reference_share=float(ref_counts[k] / n_ref),
                recent_share=float(new_counts[k] / n_new),
                lower=lower,
                upper=upper,
            )
        )
    return result


def categorical_bins(
    reference: Sequence[str], recent: Sequence[str], bins: int, names: dict[str, str] | None = None
) -> list[Bin]:
    """The reference's ``bins - 1`` most frequent categories, then ``other``."""
    ref_counts = Counter(reference)
    kept = [value for value, _ in ref_counts.most_common(bins - 1)]
    new_counts = Counter(recent)
    n_ref, n_new = len(reference), len(recent)
    result = []
    for value in kept:
        result.append(
            Bin(
                label=(names or {}).get(value, value),
                reference_count=ref_counts[value],
                recent_count=new_counts[value],
                reference_share=ref_counts[value] / n_ref,
                recent_share=new_counts[value] / n_new,
            )
        )
    other_ref = n_ref - sum(ref_counts[v] for v in kept)
    other_new = n_new - sum(new_counts[v] for v in kept)
    result.append(Bin(OTHER, other_ref, other_new, other_ref / n_ref, other_new / n_new))
    return result


def compare_feature(
    name: str,
    reference: Sequence,
    recent: Sequence,
    *,
    bins: int,
    threshold: float,
    min_events: int,
    names: dict[str, str] | None = None,
) -> FeatureDrift:
    """PSI of one feature; values that are None (not recorded) are left out."""
    kind, binning = FEATURES[name]
    ref = [v for v in reference if v is not None]
    new = [v for v in recent if v is not None]
    if len(ref) < min_events or len(new) < min_events:
        return FeatureDrift(name, kind, binning, INSUFFICIENT, None, None, len(ref), len(new), None)
    if binning == CONTINUOUS:
        table = continuous_bins(ref, new, bins)
    else:
        table = categorical_bins([str(v) for v in ref], [str(v) for v in new], bins, names)
    value = psi([b.reference_share for b in table], [b.recent_share for b in table])
    populated = sum(1 for b in table if b.reference_count > 0)
    noise = (populated - 1) * (1 / len(ref) + 1 / len(new))
    over = value > threshold
    return FeatureDrift(
        name,
        kind,
        binning,
        DRIFT if over else OK,
        value,
        over,
        len(ref),
        len(new),
        noise,
        table,
    )


def _columns(window: Window) -> dict[str, list]:
    return {
        "width": window.widths,
        "height": window.heights,
        "brightness": window.brightness,
        "format": [f.upper() if f else None for f in window.formats],
        "class": window.class_ids,
        "confidence": window.confidences,
    }


def _summary(window: Window) -> WindowSummary:
    return WindowSummary(
        window.description, len(window), window.first_event_time, window.last_event_time
    )


def compare_windows(
    reference: Window,
    recent: Window,
    *,
    bins: int = 10,
    threshold: float = 0.2,
    min_events: int = 200,
    computed_at: datetime | None = None,
) -> DriftReport:
    """The drift report of ``recent`` against ``reference`` (pure computation, no I/O)."""
    class_names = {
        str(class_id): f"{class_id} {name}"
        for class_id, name in {**reference.class_names, **recent.class_names}.items()
    }
    ref_cols, new_cols = _columns(reference), _columns(recent)
    features = [
        compare_feature(
            name,
            ref_cols[name],
            new_cols[name],
            bins=bins,
            threshold=threshold,
            min_events=min_events,
            names=class_names if name == "class" else None,
        )
        for name in FEATURES
    ]
    if min(len(reference), len(recent)) < min_events:
        status = INSUFFICIENT
        message = (
            f"not enough events to compare: the reference window has {len(reference)} and the "
            f"recent window {len(recent)} successful events; each needs at least {min_events}"
        )
    else:
        drifted = [f.feature for f in features if f.over_threshold]
        missing = [f.feature for f in features if f.status == INSUFFICIENT]
        status = DRIFT if drifted else OK
        message = (
            f"drift over {threshold:g} in: {', '.join(drifted)}"
            if drifted
            else f"no feature over the threshold of {threshold:g}"
        )
        if missing:
            message += f"; too few recorded values for: {', '.join(missing)}"
    return DriftReport(
        computed_at=computed_at or utc_now(),
        status=status,
        message=message,
        threshold=threshold,
        min_events=min_events,
        reference=_summary(reference),
        recent=_summary(recent),
        features=features,
    )


def compute_report(engine: Engine, settings: Settings, now: datetime | None = None) -> DriftReport:
    """Read both windows from the warehouse as ``settings`` configure them, and compare."""
    now = now or utc_now()
    reference = reference_window(
        engine,
        first_events=settings.drift_reference_events,
        start=settings.drift_reference_start,
        end=settings.drift_reference_end,
    )
    if settings.drift_reference_end is not None:
        recent = recent_window(
            engine,
            last_events=settings.drift_recent_events,
            minutes=settings.drift_recent_minutes,
            after_time=settings.drift_reference_end,
            now=now,
        )
    elif len(reference) < settings.drift_reference_events:
        # Until the reference is complete every new event belongs to it: no recent window yet.
        recent = Window("none yet: the reference window is still filling")
    else:
        recent = recent_window(
            engine,
            last_events=settings.drift_recent_events,
            minutes=settings.drift_recent_minutes,
            after_event_id=reference.last_event_id,
            now=now,
        )
    return compare_windows(
        reference,
        recent,
        bins=settings.drift_bins,
        threshold=settings.drift_threshold,
        min_events=settings.drift_min_events,
        computed_at=now,
    )


# ---------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------


def publish(report: DriftReport) -> None:
    """Set the drift gauges from ``report`` (the one place they are written).

    A feature without an index (too few events) is set to NaN rather than 0: a
    0 would claim "no drift", and labelled series cannot be removed in
    prometheus_client's multiprocess mode. ``imgclass_drift_psi > threshold``
    is false for NaN, so no alert fires on missing data.
    """
    metrics.set_drift_threshold(report.threshold)
    for feature in report.features:
        metrics.set_drift_psi(feature.feature, math.nan if feature.psi is None else feature.psi)


# ---------------------------------------------------------------------------
# Background updates
# ---------------------------------------------------------------------------


class DriftMonitor:
    """Keeps the latest report; ``start`` recomputes it every ``drift_interval_s`` seconds.

    ``also``: other figures the same background thread refreshes from the warehouse
    after each report (the accuracy gauges), each failing on its own.
    """

    def __init__(
        self, engine: Engine, settings: Settings, also: Sequence[Callable[[], object]] = ()
    ):
        self.engine = engine
        self.settings = settings
        self.also = tuple(also)
        self._latest: DriftReport | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def latest(self) -> DriftReport | None:
        return self._latest

    def update(self) -> DriftReport:
        """Recompute, publish and keep the report (synchronous)."""
        report = compute_report(self.engine, self.settings)
        with self._lock:
            # Two updates may race (background and a fresh request): keep the newer.
            if self._latest is None or report.computed_at >= self._latest.computed_at:
                self._latest = report
                publish(report)
        return report

    def report(self, *, fresh: bool = False) -> DriftReport:
        """The latest report, computed now if there is none yet or ``fresh`` is asked."""
        latest = self._latest
        if fresh or latest is None:
            return self.update()
        return latest

    def start(self) -> None:
        """Start the daemon thread (no-op when the interval is 0 or it already runs)."""
        if self.settings.drift_interval_s <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="imgclass-drift", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.update()
            except Exception:
                # The service keeps serving; the last good report and gauges stay.
                log.exception("drift update failed")
            for task in self.also:
                try:
                    task()
                except Exception:
                    name = getattr(task, "__qualname__", repr(task))
                    log.exception("background update %s failed", name)
            self._stop.wait(self.settings.drift_interval_s)
