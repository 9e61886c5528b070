"""Prometheus metrics: every metric imgclass exposes, and small functions to update them.

All names start with ``imgclass_`` and live in this module's own registry, so
``/metrics`` shows exactly these (no process or GC collectors, which could not
be merged across workers anyway). Code elsewhere calls the functions below
rather than touching metric objects, so the names, labels and units stay in
one place.

Under ``imgclass serve`` (gunicorn, several workers) prometheus_client runs in
multiprocess mode (see ``ops/multiproc.py``): each worker writes its values to
mmap files and :func:`render` merges them, so every scrape shows the server's
totals. How each gauge is merged across workers is its ``multiprocess_mode``,
chosen per gauge below. In a single process (the Flask test client, ``flask
run``) the same code simply counts in memory.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from imgclass.ops import class_labels, multiproc
from imgclass.ops.class_labels import ClassLabels

REGISTRY = CollectorRegistry()
# What generate_latest writes: the classic text format, version 0.0.4, which every
# Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STAGES = ("decode", "preprocess", "inference", "db_write")
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
FEEDBACK_OUTCOMES = ("correct", "incorrect")

# Whole requests: a 640x480 JPEG takes ~20 ms, a 12 MP photo ~150 ms; the p99 alert is at 2 s.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
# One stage of one image (or of one batch, for inference): sub-millisecond to seconds.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PIXEL_BUCKETS = (32, 64, 128, 224, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 16384)
BYTE_BUCKETS = tuple(1024 * 4**i for i in range(10))  # 1 KiB … 256 MiB
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

# --- HTTP ---------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "imgclass_http_requests",
    "HTTP requests answered, by route (the URL rule, or 'unmatched') and status code.",
    ["endpoint", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "imgclass_http_request_duration_seconds",
    "Time from the start of Flask's request handling to the response, by route.",
    ["endpoint"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)

# --- the predict path ---------------------------------------------------------------------

STAGE_SECONDS = Histogram(
    "imgclass_stage_duration_seconds",
    "Time spent in one stage of the predict path: decode and preprocess per image, "
    "inference per batch (one per request), db_write per request.",
    ["stage"],
    buckets=STAGE_BUCKETS,
    registry=REGISTRY,
)
IMAGES_IN_FLIGHT = Gauge(
    "imgclass_images_in_flight",
    "Images accepted by the predict service and not yet answered.",
    # Each worker counts its own; the server's figure is the sum over the workers
    # that are alive (a worker killed mid-request must not leave its count behind).
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
PREDICTIONS = Counter(
    "imgclass_predictions",
    "Images classified and answered, by top-1 class; classes beyond the server's "
    "label budget (IMGCLASS_METRICS_TOP_CLASSES) are counted as 'other'.",
    ["class_name"],
    registry=REGISTRY,
)
CONFIDENCE = Histogram(
    "imgclass_prediction_confidence",
    "Top-1 probability of each classified image.",
    buckets=CONFIDENCE_BUCKETS,
    registry=REGISTRY,
)
INPUT_WIDTH = Histogram(
    "imgclass_input_width_pixels",
    "Width of each decoded upload (after EXIF rotation).",
    buckets=PIXEL_BUCKETS,
    registry=REGISTRY,
)
INPUT_HEIGHT = Histogram(
    "imgclass_input_height_pixels",
    "Height of each decoded upload (after EXIF rotation).",
    buckets=PIXEL_BUCKETS,
    registry=REGISTRY,
)
INPUT_BYTES = Histogram(
    "imgclass_input_size_bytes",
    "Encoded size of each decoded upload.",
    buckets=BYTE_BUCKETS,
    registry=REGISTRY,
)

# --- state of the service -----------------------------------------------------------------

MODEL_ROLES = ("primary", "fallback")
MODEL_INFO = Gauge(
    "imgclass_model_info",
    "The models this server loaded (always 1; the labels carry the information): role "
    "'primary' answers, 'fallback' answers when the primary fails.",
    ["name", "version", "sha256", "role"],
    # Every live worker sets 1 for the models it loaded; max keeps one series per
    # distinct model, and dropping exited workers drops a model no one serves any more.
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
READY = Gauge(
    "imgclass_ready",
    "1 when a readiness check passes, 0 when it fails (set by /readyz and at every scrape).",
    ["check"],
    # The newest result of any live worker: checks probe shared state (the
    # database, the model directory), and a worker that exited has nothing to say.
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
DATA_DIR_FREE = Gauge(
    "imgclass_data_dir_free_bytes",
    "Bytes available to the service on the filesystem of the data directory.",
    # Measured at scrape time by whichever worker answers: the newest reading wins.
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
DATA_DIR_TOTAL = Gauge(
    "imgclass_data_dir_total_bytes",
    "Size of the filesystem that holds the data directory.",
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)

# --- result cache, fallback classifier -----------------------------------------------------

CACHE_HITS = Counter(
    "imgclass_cache_hits",
    "Images answered from the result cache without running the model.",
    registry=REGISTRY,
)
CACHE_MISSES = Counter(
    "imgclass_cache_misses",
    "Images looked up in the result cache and not found.",
    registry=REGISTRY,
)
FALLBACK_ACTIVATIONS = Counter(
    "imgclass_fallback_activations",
    "Requests answered by a fallback model because the one before it failed, by that model.",
    ["model"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "imgclass_circuit_breaker_state",
    "Circuit breaker in front of each model: 0 closed, 1 half-open, 2 open.",
    ["model"],
    # Each worker has its own breaker; the worst live one is what an operator
    # must know about (open beats half-open beats closed).
    multiprocess_mode="livemax",
    registry=REGISTRY,
)

# --- drift, ground truth, backups ----------------------------------------------------------

DRIFT_PSI = Gauge(
    "imgclass_drift_psi",
    "Population Stability Index of the recent window against the reference window, by feature "
    "(NaN while a window has too few events).",
    ["feature"],
    # Every live worker recomputes the same figure from the shared warehouse: the
    # newest value of a live process is the truth ("max" would keep a dead worker's
    # stale maximum, and NaN, for too little data, does not order).
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
DRIFT_THRESHOLD = Gauge(
    "imgclass_drift_threshold",
    "PSI above which a feature counts as drifted (the configured alert threshold).",
    # Set with the PSI by the same workers; merged the same way.
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
FEEDBACK = Counter(
    "imgclass_feedback",
    "Ground-truth feedback received on predictions (traffic, not accuracy: a feedback that "
    'replaced an earlier one for the same image has replaced="true"), by outcome.',
    ["outcome", "replaced"],
    registry=REGISTRY,
)
# Accuracy comes from the warehouse, where a replaced feedback counts once (ops/accuracy.py):
# every live worker computes the same figures from it, so the newest value is the truth.
MODEL_ACCURACY = Gauge(
    "imgclass_model_accuracy_ratio",
    "Top-1 accuracy of a model's predictions that have feedback, over the recent window "
    "(IMGCLASS_ACCURACY_WINDOW_HOURS, by prediction time); NaN when none has.",
    ["name", "version"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
MODEL_FEEDBACK_EVENTS = Gauge(
    "imgclass_model_feedback_events",
    "Predictions of a model with feedback in the recent window: the accuracy's denominator.",
    ["name", "version"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
CLASS_ACCURACY = Gauge(
    "imgclass_class_accuracy_ratio",
    "Top-1 accuracy (precision) of the predictions of a class that have feedback, over the "
    "recent window; classes imgclass_predictions_total does not name are 'other'; NaN: none.",
    ["class_name"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
CLASS_FEEDBACK_EVENTS = Gauge(
    "imgclass_class_feedback_events",
    "Predictions of a class with feedback in the recent window: the accuracy's denominator.",
    ["class_name"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
LAST_BACKUP = Gauge(
    "imgclass_backup_last_success_timestamp_seconds",
    "Unix time of the newest successful warehouse backup (0: none known to this server).",
    # A timestamp only grows, and a backup stays made after its process exits:
    # the maximum over every process, live or not.
    multiprocess_mode="max",
    registry=REGISTRY,
)

# Series with known label values exist from the start (at 0), so rates and
# ratios over them have data before the first event, as Prometheus recommends.
for _stage in STAGES:
    STAGE_SECONDS.labels(_stage)
for _outcome in FEEDBACK_OUTCOMES:
    for _replaced in ("false", "true"):
        FEEDBACK.labels(_outcome, _replaced)


_class_labels = ClassLabels(25)


def configure(*, top_classes: int) -> None:
    """Set the class label budget (``Settings.metrics_top_classes``), shared by the server."""
    global _class_labels
    _class_labels = ClassLabels(top_classes, multiproc.server_file(class_labels.FILE_NAME))


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus text format, and its content type."""
    directory = multiproc.directory()
    if directory is None:
        return generate_latest(REGISTRY), CONTENT_TYPE
    # A fresh registry per scrape: the collector reads every worker's files now.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry), CONTENT_TYPE


# --- updates from the serving path -----------------------------------------------------------


def observe_request(endpoint: str, status: int, seconds: float | None) -> None:
    HTTP_REQUESTS.labels(endpoint, str(status)).inc()
    if seconds is not None:
        HTTP_SECONDS.labels(endpoint).observe(seconds)


def stage(name: str) -> AbstractContextManager:
    """Context manager timing one stage of the predict path (one of ``STAGES``)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {STAGES}")
    return STAGE_SECONDS.labels(name).time()


def observe_input(width: int, height: int, n_bytes: int) -> None:
    INPUT_WIDTH.observe(width)
    INPUT_HEIGHT.observe(height)
    INPUT_BYTES.observe(n_bytes)


def observe_prediction(class_name: str, confidence: float) -> None:
    PREDICTIONS.labels(_class_labels(class_name)).inc()
    CONFIDENCE.observe(confidence)


@contextmanager
def images_in_flight(count: int) -> Iterator[None]:
    IMAGES_IN_FLIGHT.inc(count)
    try:
        yield
    finally:
        IMAGES_IN_FLIGHT.dec(count)


def set_model_info(name: str, version: str, sha256: str, role: str) -> None:
    """``role`` is ``primary`` (the model that answers) or ``fallback``."""
    if role not in MODEL_ROLES:
        raise ValueError(f"unknown model role {role!r}; expected one of {MODEL_ROLES}")
    MODEL_INFO.labels(name, version, sha256, role).set(1)


def set_ready(check: str, ok: bool) -> None:
    READY.labels(check).set(1 if ok else 0)


def set_disk_usage(path: Path) -> None:
    """Measure the filesystem holding ``path`` (skipped if it cannot be read)."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return
    DATA_DIR_FREE.set(usage.free)
    DATA_DIR_TOTAL.set(usage.total)


# --- updates from the cache, fallback, drift, feedback and backup code -------------------------


def cache_hit() -> None:
    CACHE_HITS.inc()


def cache_miss() -> None:
    CACHE_MISSES.inc()


def fallback_available(model: str) -> None:
    """A fallback ``model`` is configured: export its activation counter from 0."""
    FALLBACK_ACTIVATIONS.labels(model)


def fallback_activated(model: str) -> None:
    """A fallback ``model`` answered because the model before it in the chain failed."""
    FALLBACK_ACTIVATIONS.labels(model).inc()


def set_breaker_state(model: str, state: str) -> None:
    """``state`` is ``closed``, ``half_open`` or ``open``."""
    try:
        value = BREAKER_STATES[state]
    except KeyError:
        raise ValueError(
            f"unknown circuit breaker state {state!r}; expected one of {sorted(BREAKER_STATES)}"
        ) from None
    BREAKER_STATE.labels(model).set(value)


def set_drift_psi(feature: str, value: float) -> None:
    DRIFT_PSI.labels(feature).set(value)


def set_drift_threshold(value: float) -> None:
    DRIFT_THRESHOLD.set(value)


def feedback_received(correct: bool, replaced: bool) -> None:
    outcome = FEEDBACK_OUTCOMES[0] if correct else FEEDBACK_OUTCOMES[1]
    FEEDBACK.labels(outcome, "true" if replaced else "false").inc()


def set_model_accuracy(name: str, version: str, feedback: int, accuracy: float) -> None:
    MODEL_ACCURACY.labels(name, version).set(accuracy)
    MODEL_FEEDBACK_EVENTS.labels(name, version).set(feedback)


def set_class_accuracy(class_name: str, feedback: int, accuracy: float) -> None:
    """``class_name``: a label of ``class_label`` (a named class or ``other``)."""
    CLASS_ACCURACY.labels(class_name).set(accuracy)
    CLASS_FEEDBACK_EVENTS.labels(class_name).set(feedback)


def named_classes() -> frozenset[str]:
    """The classes ``imgclass_predictions_total`` names so far (the server's set)."""
    return _class_labels.named()


def set_last_backup(timestamp: float) -> None:
    """Unix time of the newest successful backup (also at start, from the newest one on disk)."""
    LAST_BACKUP.set(timestamp)
