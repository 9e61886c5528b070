"""Read the two windows that drift detection compares, from the warehouse.

A window is a set of *successful* prediction events (status 200, a predicted
class), each with the features drift looks at: the input's width, height,
brightness and format (image_dim) and the prediction's class and confidence.
Failed requests are left out: they have no prediction, and a burst of errors is
an error-rate problem, not a change in what the model sees.

The reference window is either the first N successful events or every event in
a UTC date range; the recent window is the last M successful events or those
of the last T minutes, and it never overlaps the reference (it starts after
the reference's last event). Both are bounded by ``MAX_WINDOW_EVENTS`` so a
busy warehouse cannot make one query load millions of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, Select, select

from imgclass.warehouse.recorder import timestamp_key, utc_now
from imgclass.warehouse.schema import NONE_KEY, api_event_fact, class_dim, image_dim

MAX_WINDOW_EVENTS = 100_000


@dataclass(frozen=True)
class Window:
    """One window's events, column by column (index i is the same event in every list)."""

    description: str
    event_ids: list[int] = field(default_factory=list)
    event_times: list[datetime] = field(default_factory=list)
    widths: list[int | None] = field(default_factory=list)
    heights: list[int | None] = field(default_factory=list)
    brightness: list[float | None] = field(default_factory=list)
    formats: list[str | None] = field(default_factory=list)
    class_ids: list[int] = field(default_factory=list)
    class_names: dict[int, str] = field(default_factory=dict)
    confidences: list[float | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.event_ids)

    @property
    def first_event_time(self) -> datetime | None:
        return min(self.event_times) if self.event_times else None

    @property
    def last_event_time(self) -> datetime | None:
        return max(self.event_times) if self.event_times else None

    @property
    def last_event_id(self) -> int | None:
        return max(self.event_ids) if self.event_ids else None


def _successful_events() -> Select:
    f, i, c = api_event_fact.c, image_dim.c, class_dim.c
    return (
        select(
            f.event_id,
            f.event_time,
            i.width,
            i.height,
            i.brightness,
            i.format,
            c.class_id,
            c.class_name,
            f.confidence,
        )
        .select_from(
            api_event_fact.join(image_dim, image_dim.c.image_key == f.image_key).join(
                class_dim, class_dim.c.class_key == f.class_key
            )
        )
        .where(f.status_code == 200, f.class_key != NONE_KEY)
    )


def _load(engine: Engine, query: Select, description: str) -> Window:
    window = Window(description)
    with engine.connect() as conn:
        for row in conn.execute(query):
            window.event_ids.append(row.event_id)
            window.event_times.append(row.event_time)
            window.widths.append(row.width)
            window.heights.append(row.height)
            window.brightness.append(row.brightness)
            window.formats.append(row.format)
            window.class_ids.append(row.class_id)
            window.class_names.setdefault(row.class_id, row.class_name)
            window.confidences.append(row.confidence)
    return window


def _time_range(query: Select, start: datetime | None, end: datetime | None) -> Select:
    """Restrict to [start, end); the timestamp_key bounds let the index do the work."""
    f = api_event_fact.c
    if start is not None:
        query = query.where(
            f.timestamp_key >= timestamp_key(start.replace(second=0, microsecond=0)),
            f.event_time >= start,
        )
    if end is not None:
        query = query.where(f.timestamp_key <= timestamp_key(end), f.event_time < end)
    return query


def reference_window(
    engine: Engine,
    *,
    first_events: int = 1000,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Window:
    """The first ``first_events`` successful events, or those in [start, end) (naive UTC)."""
    f = api_event_fact.c
    if start is not None or end is not None:
        if start is None or end is None:
            raise ValueError("a reference date range needs both start and end")
        query = _time_range(_successful_events(), start, end)
        description = f"successful events from {start.isoformat()} to {end.isoformat()} (UTC)"
        limit = MAX_WINDOW_EVENTS
    else:
        query = _successful_events()
        description = f"first {first_events} successful events"
        limit = min(first_events, MAX_WINDOW_EVENTS)
    return _load(engine, query.order_by(f.event_id).limit(limit), description)


def recent_window(
    engine: Engine,
    *,
    last_events: int = 500,
    minutes: int | None = None,
    after_event_id: int | None = None,
    after_time: datetime | None = None,
    now: datetime | None = None,
) -> Window:
    """The last ``last_events`` successful events, or those of the last ``minutes``.

    ``after_event_id`` / ``after_time`` exclude everything up to the end of the
    reference window, so the two windows never share an event.
    """
    f = api_event_fact.c
    query = _successful_events()
    if after_event_id is not None:
        query = query.where(f.event_id > after_event_id)
    if after_time is not None:
        query = _time_range(query, after_time, None)
    if minutes is not None:
        since = (now or utc_now()) - timedelta(minutes=minutes)
        query = _time_range(query, since, None)
        description = f"successful events of the last {minutes} minutes"
        limit = MAX_WINDOW_EVENTS
    else:
        description = f"last {last_events} successful events"
        limit = min(last_events, MAX_WINDOW_EVENTS)
    # Newest first so LIMIT keeps the most recent ones.
    return _load(engine, query.order_by(f.event_id.desc()).limit(limit), description)
