"""Random events for the cube tests, and the plain-Python answers to check the cube against.

The events straddle New Year 2026/2027 (ISO week 2026-W53 and 2027-W01 lie on both
sides), have latency ties, groups of one and two rows, failures, cache hits, fallbacks,
repeated images and ground-truth feedback.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Engine, select

from imgclass.vision.labels import imagenet_labels
from imgclass.warehouse.concepts import imagenet_concepts
from imgclass.warehouse.recorder import (
    ClassFacts,
    Event,
    ImageFacts,
    ModelFacts,
    Recorder,
    Requester,
)
from imgclass.warehouse.schema import api_event_fact, prediction_feedback

USERS = [
    Requester(1, "alice", "10.0.0.1", "curl/8.5.0"),
    Requester(1, "alice", "10.0.0.2", "Mozilla/5.0 (X11, Linux x86_64)"),
    Requester(2, "bob", "192.168.1.7", "python-requests/2.32"),
    Requester(3, "carol", "203.0.113.9", "curl/8.5.0"),
    Requester(0, "anonymous", "198.51.100.4", "Wget/1.21"),
]
CLASS_IDS = [281, 283, 285, 207, 208, 250, 134, 517, 963, 948, 1]
PRIMARY = ModelFacts("efficientnet-lite0", "0.1.0+fp32", "aa" * 32)
FALLBACK = ModelFacts("efficientnet-lite0", "0.1.0+int8", "bb" * 32)
FAILURES = [(415, "unsupported_media_type"), (422, "corrupt_image"), (503, "model_unavailable")]
START = datetime(2026, 12, 29, 22, 0)


@dataclass
class Row:
    """One event as the cube should see it, with its feedback (if any)."""

    event: Event
    feedback: bool | None  # is_correct, None = no feedback


def make_events(n: int = 400, seed: int = 7) -> list[Row]:
    rng = random.Random(seed)
    labels = imagenet_labels()
    rows = []
    for i in range(n):
        # Dense in the first hours (several rows per minute), sparse later (groups of 1-2).
        minutes = rng.randint(0, 90) if i < n // 2 else rng.randint(0, 10 * 24 * 60)
        when = START + timedelta(minutes=minutes, seconds=rng.randint(0, 59))
        who = rng.choice(USERS)
        time_taken = rng.choice([5.0, 7.5, 7.5, 12.0]) if rng.random() < 0.3 else rng.uniform(1, 80)
        if rng.random() < 0.12:
            status, code = rng.choice(FAILURES)
            event = Event(f"r{i}", when, who, "predict", status, time_taken, error_code=code)
            if status == 422:  # a corrupt upload still has bytes, hence an image row
                event = Event(
                    f"r{i}",
                    when,
                    who,
                    "predict",
                    status,
                    time_taken,
                    image=ImageFacts(f"{i:064x}", f"bad{i}.jpg", 10),
                    error_code=code,
                )
            rows.append(Row(event, None))
            continue
        class_id = rng.choice(CLASS_IDS)
        image = rng.randrange(60)
        fallback = rng.random() < 0.15
        event = Event(
            request_id=f"r{i}",
            event_time=when,
            requester=who,
            endpoint="predict",
            status_code=200,
            time_taken_ms=time_taken,
            image=ImageFacts(
                f"{image:064x}",
                f"img{image}.{'png' if image % 4 == 0 else 'jpg'}",
                1000 + image,
                640,
                480,
                "PNG" if image % 4 == 0 else "JPEG",
            ),
            predicted=ClassFacts(class_id, labels.names[class_id], labels.wnids[class_id]),
            model=FALLBACK if fallback else PRIMARY,
            confidence=round(rng.random(), 3),
            cache_hit=rng.random() < 0.2,
            is_fallback=fallback,
        )
        rows.append(Row(event, rng.random() < 0.7 if rng.random() < 0.3 else None))
    return rows


def store(engine: Engine, rows: list[Row]) -> None:
    """Record the events through the Recorder (a few per transaction), then the feedback."""
    recorder = Recorder(engine)
    for start in range(0, len(rows), 7):
        recorder.record([r.event for r in rows[start : start + 7]])
    with engine.begin() as conn:
        ids = dict(
            conn.execute(select(api_event_fact.c.request_id, api_event_fact.c.event_id)).all()
        )
        feedback = [
            {
                "event_id": ids[r.event.request_id],
                "true_class_key": 0,
                "is_correct": r.feedback,
                "user_id": 1,
                "created_at": r.event.event_time,
            }
            for r in rows
            if r.feedback is not None
        ]
        conn.execute(prediction_feedback.insert(), feedback)


# -- the plain-Python answers ---------------------------------------------------------


def _concept(depth: int) -> Callable[[Row], str | None]:
    def value(row: Row) -> str | None:
        if row.event.predicted is None:
            return None
        path = imagenet_concepts().paths[row.event.predicted.class_id]
        return path[min(depth, len(path) - 1)].name

    return value


def _week(when: datetime) -> str:
    iso = when.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


DIMENSION_VALUES: dict[str, Callable[[Row], object]] = {
    "minute": lambda r: r.event.event_time.strftime("%Y-%m-%dT%H:%M"),
    "hour": lambda r: r.event.event_time.strftime("%Y-%m-%dT%H:00"),
    "day": lambda r: r.event.event_time.date().isoformat(),
    "week": lambda r: _week(r.event.event_time),
    "month": lambda r: r.event.event_time.strftime("%Y-%m"),
    "quarter": lambda r: f"{r.event.event_time.year}-Q{(r.event.event_time.month - 1) // 3 + 1}",
    "year": lambda r: str(r.event.event_time.year),
    "weekday": lambda r: r.event.event_time.isoweekday(),
    "hour_of_day": lambda r: r.event.event_time.hour,
    "user": lambda r: r.event.requester.username,
    "ip": lambda r: r.event.requester.ip_address,
    "user_agent": lambda r: r.event.requester.user_agent,
    "class": lambda r: (
        imagenet_concepts().labels[r.event.predicted.class_id] if r.event.predicted else "none"
    ),
    "model": lambda r: f"{r.event.model.name}@{r.event.model.version}" if r.event.model else "none",
    "status": lambda r: r.event.status_code,
    "image_format": lambda r: r.event.image.format if r.event.image else None,
    "error_code": lambda r: r.event.error_code,
    "cache_hit": lambda r: r.event.cache_hit,
    "fallback": lambda r: r.event.is_fallback,
    "concept:0": _concept(0),
    "concept:3": _concept(3),
    "concept:7": _concept(7),
}


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def measures(rows: list[Row]) -> dict[str, object]:
    times = np.array([r.event.time_taken_ms for r in rows])
    confidences = [r.event.confidence for r in rows if r.event.confidence is not None]
    feedback = [r.feedback for r in rows if r.feedback is not None]
    errors = sum(r.event.status_code >= 400 for r in rows)
    return {
        "requests": len(rows),
        "errors": errors,
        "error_rate": _rate(errors, len(rows)),
        "avg_time_ms": float(times.mean()) if len(rows) else None,
        # numpy's default "linear" method is the documented definition (percentile_cont).
        "p50_time_ms": float(np.percentile(times, 50)) if len(rows) else None,
        "p95_time_ms": float(np.percentile(times, 95)) if len(rows) else None,
        "p99_time_ms": float(np.percentile(times, 99)) if len(rows) else None,
        "min_time_ms": float(times.min()) if len(rows) else None,
        "max_time_ms": float(times.max()) if len(rows) else None,
        "avg_confidence": sum(confidences) / len(confidences) if confidences else None,
        "distinct_users": len({r.event.requester.username for r in rows}),
        "distinct_images": len({r.event.image.sha256 for r in rows if r.event.image}),
        "cache_hit_rate": _rate(sum(r.event.cache_hit for r in rows), len(rows)),
        "fallback_rate": _rate(sum(r.event.is_fallback for r in rows), len(rows)),
        "feedback_count": len(feedback),
        "accuracy": _rate(sum(feedback), len(feedback)),
    }


def expected(
    rows: list[Row], group_by: list[str], names: list[str], keep: Callable[[Row], bool] = bool
) -> dict[tuple, dict]:
    """{dimension values: {measure: value}} computed the straightforward way."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        if keep(row):
            groups[tuple(DIMENSION_VALUES[d](row) for d in group_by)].append(row)
    return {key: {m: measures(members)[m] for m in names} for key, members in groups.items()}
