"""Ground truth in the warehouse: find a request's events, store feedback, read accuracy.

``prediction_feedback`` holds one row per fact row (``event_id`` is unique): the
class a caller says the image really shows, and whether the model's top-1 was
that class. A second feedback for the same event replaces the first, with an
``INSERT … ON CONFLICT (event_id) DO UPDATE`` that works the same on SQLite and
PostgreSQL. ``accuracy`` aggregates it overall, per class, per model or per
day, for the cube and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from sqlalchemy import Engine, and_, case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from imgclass.warehouse.db import WRITE
from imgclass.warehouse.recorder import ClassFacts, utc_now
from imgclass.warehouse.schema import (
    NONE_KEY,
    api_event_fact,
    class_dim,
    image_dim,
    model_dim,
    prediction_feedback,
    time_dim,
    user_dim,
)


@dataclass(frozen=True)
class EventRef:
    """One fact row of a request, as feedback needs it."""

    event_id: int
    filename: str
    status_code: int
    error_code: str | None
    class_id: int | None  # predicted top-1; None for a failed event
    class_name: str | None
    model_name: str | None
    model_version: str | None

    @property
    def succeeded(self) -> bool:
        return self.class_id is not None


@dataclass(frozen=True)
class StoredFeedback:
    event_id: int
    true_class_id: int
    is_correct: bool
    replaced: bool  # an earlier feedback for this event was overwritten


def request_events(engine: Engine, request_id: str, *, owner: int | None) -> list[EventRef]:
    """The fact rows recorded under ``request_id`` for ``owner``, in recording order.

    ``owner`` is an ``api_user.user_id`` (0: anonymous callers): only events recorded for
    that account are read, since a request id is not secret and clients choose their own
    (``X-Request-ID``), so strangers' requests can share one. ``None`` reads every owner's
    (an admin's view).
    """
    f, c, m, i = api_event_fact.c, class_dim.c, model_dim.c, image_dim.c
    query = (
        select(
            f.event_id,
            i.image_filename,
            f.status_code,
            f.error_code,
            f.class_key,
            c.class_id,
            c.class_name,
            m.model_name,
            m.model_version,
        )
        .select_from(
            api_event_fact.join(class_dim, c.class_key == f.class_key)
            .join(model_dim, m.model_key == f.model_key)
            .join(image_dim, i.image_key == f.image_key)
        )
        .where(f.request_id == request_id)
        .order_by(f.event_id)
    )
    if owner is not None:
        mine = select(user_dim.c.user_key).where(user_dim.c.user_id == owner)
        query = query.where(f.user_key.in_(mine))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    events = []
    for row in rows:
        ok = row.status_code == 200 and row.class_key != NONE_KEY
        events.append(
            EventRef(
                event_id=row.event_id,
                filename=row.image_filename if row.image_filename != "none" else "",
                status_code=row.status_code,
                error_code=row.error_code,
                class_id=row.class_id if ok else None,
                class_name=row.class_name if ok else None,
                model_name=row.model_name if ok else None,
                model_version=row.model_version if ok else None,
            )
        )
    return events


class FeedbackStore:
    """Writes feedback rows; one instance per process, safe to share between threads."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def record(self, event: EventRef, true_class: ClassFacts, user_id: int) -> StoredFeedback:
        """Store (or replace) the ground truth of one successful event."""
        if not event.succeeded:
            raise ValueError(f"event {event.event_id} has no prediction to give feedback on")
        is_correct = true_class.class_id == event.class_id
        with self.engine.connect() as conn:
            conn.execution_options(**WRITE)
            with conn.begin():
                class_key = self._class_key(conn, true_class)
                existed = (
                    conn.execute(
                        select(prediction_feedback.c.feedback_id).where(
                            prediction_feedback.c.event_id == event.event_id
                        )
                    ).first()
                    is not None
                )
                values = {
                    "true_class_key": class_key,
                    "is_correct": is_correct,
                    "user_id": user_id,
                    "created_at": utc_now(),
                }
                statement = self._insert(prediction_feedback).values(
                    event_id=event.event_id, **values
                )
                conn.execute(
                    statement.on_conflict_do_update(index_elements=["event_id"], set_=values)
                )
        return StoredFeedback(event.event_id, true_class.class_id, is_correct, existed)

    def _class_key(self, conn: Connection, cls: ClassFacts) -> int:
        """class_dim key of ``cls``, inserting the member if absent (as the recorder does)."""
        where = class_dim.c.class_id == cls.class_id
        found = conn.execute(select(class_dim.c.class_key).where(where)).scalar()
        if found is not None:
            return found
        conn.execute(
            self._insert(class_dim)
            .values(class_id=cls.class_id, class_name=cls.class_name[:128], wnid=cls.wnid)
            .on_conflict_do_nothing()
        )
        return conn.execute(select(class_dim.c.class_key).where(where)).scalar_one()


# ---------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------

AccuracyBy = Literal["overall", "true_class", "predicted_class", "model", "day"]


@dataclass(frozen=True)
class AccuracyRow:
    key: str | int | date | None  # class_id, "name version", the event's day; None overall
    label: str  # human-readable key
    feedback: int  # events with ground truth
    correct: int
    # The grouping columns' values: (class_id, class_name), (model_name, model_version), (day,).
    group: tuple = ()

    @property
    def accuracy(self) -> float:
        return self.correct / self.feedback if self.feedback else 0.0


def accuracy(
    engine: Engine,
    by: AccuracyBy = "overall",
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[AccuracyRow]:
    """Top-1 accuracy of the events that have feedback, grouped ``by``.

    ``true_class`` groups by the class the image really shows (per-class recall),
    ``predicted_class`` by what the model said (per-class precision), ``day`` by
    the day the prediction was made (UTC). ``start``/``end`` bound the events'
    time, [start, end). Rows come ordered by key.
    """
    f, fb = api_event_fact.c, prediction_feedback.c
    true_cls = class_dim.alias("true_cls")
    pred_cls = class_dim.alias("pred_cls")
    source = (
        prediction_feedback.join(api_event_fact, f.event_id == fb.event_id)
        .join(true_cls, true_cls.c.class_key == fb.true_class_key)
        .join(pred_cls, pred_cls.c.class_key == f.class_key)
        .join(model_dim, model_dim.c.model_key == f.model_key)
        .join(time_dim, time_dim.c.timestamp_key == f.timestamp_key)
    )
    groups = {
        "overall": [],
        "true_class": [true_cls.c.class_id, true_cls.c.class_name],
        "predicted_class": [pred_cls.c.class_id, pred_cls.c.class_name],
        "model": [model_dim.c.model_name, model_dim.c.model_version],
        "day": [time_dim.c.day],
    }
    if by not in groups:
        raise ValueError(f"accuracy by {by!r}: choose one of {', '.join(groups)}")
    columns = groups[by]
    correct = func.sum(case((fb.is_correct, 1), else_=0))
    query = select(*columns, func.count().label("n"), correct.label("correct")).select_from(source)
    conditions = []
    if start is not None:
        conditions.append(f.event_time >= start)
    if end is not None:
        conditions.append(f.event_time < end)
    if conditions:
        query = query.where(and_(*conditions))
    if columns:
        query = query.group_by(*columns).order_by(*columns)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    result = []
    for row in rows:
        n, ok = int(row.n), int(row.correct or 0)
        if by == "overall":
            if n:
                result.append(AccuracyRow(None, "overall", n, ok))
        elif by in ("true_class", "predicted_class"):
            result.append(AccuracyRow(row[0], f"{row[0]} {row[1]}", n, ok, (row[0], row[1])))
        elif by == "model":
            name = f"{row[0]} {row[1]}"
            result.append(AccuracyRow(name, name, n, ok, (row[0], row[1])))
        else:
            result.append(AccuracyRow(row[0], row[0].isoformat(), n, ok, (row[0],)))
    return result
