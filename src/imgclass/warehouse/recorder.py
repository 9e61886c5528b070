"""Write request events into the star schema: dimensions get-or-create, then facts.

``Recorder.record`` writes all fact rows of one request in one transaction (with
their share of the aggregates, see ``aggregates``) and returns only after
the commit, so the API can acknowledge a request only once it is durable.
Requests recorded at the same moment by other threads of the process share that
transaction (``group_commit``): one lock hand-over and one fsync for all of them.
Dimension keys that rarely change (time minute, user, class, model) are cached
per process, and only after their transaction committed, so the cache can never
point at a rolled-back row. The cache is a bounded LRU: minutes never stop coming
and a public service meets ever more clients (each address and user agent is a
user member), so a plain dict grew for as long as the worker lived.

On PostgreSQL, concurrent transactions that insert the same new dimension
member wait for each other (``ON CONFLICT`` on the unique natural key). Each
transaction therefore creates its dimension members in one global order
(dimension by dimension, natural keys sorted), so two requests that share new
images can queue but never deadlock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import cachetools
from sqlalchemy import Engine, Select, Table, TextClause, and_, bindparam, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from imgclass.warehouse.aggregates import add_facts
from imgclass.warehouse.concepts import class_label
from imgclass.warehouse.db import WRITE
from imgclass.warehouse.group_commit import GroupCommit
from imgclass.warehouse.schema import (
    NONE_KEY,
    api_event_fact,
    class_dim,
    image_dim,
    model_dim,
    time_dim,
    user_dim,
)

MAX_FILENAME = 255
BULK_CHUNK = 500  # image ids per IN (...) list in record_batch
MAX_USER_AGENT = 512
IMAGE_COLUMNS = ("image_id", "image_filename", "width", "height", "format", "bytes", "brightness")
# Dimension keys kept per process (IMGCLASS_DIMENSION_CACHE_ENTRIES): every class and model,
# a week of minutes and thousands of active clients, in about 4.5 MB when full; a miss costs
# one indexed SELECT.
DIMENSION_CACHE_ENTRIES = 20_000


@dataclass(frozen=True)
class Requester:
    user_id: int
    username: str
    ip_address: str
    user_agent: str


@dataclass(frozen=True)
class ImageFacts:
    sha256: str
    filename: str
    n_bytes: int
    width: int | None = None
    height: int | None = None
    format: str | None = None
    brightness: float | None = None  # mean luma 0-255


@dataclass(frozen=True)
class ModelFacts:
    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class ClassFacts:
    class_id: int
    class_name: str
    wnid: str | None = None


@dataclass(frozen=True)
class Event:
    """One fact row: a classified image, or a failed request."""

    request_id: str
    event_time: datetime  # UTC
    requester: Requester
    endpoint: str
    status_code: int
    time_taken_ms: float
    image: ImageFacts | None = None
    predicted: ClassFacts | None = None
    model: ModelFacts | None = None
    confidence: float | None = None
    error_code: str | None = None
    cache_hit: bool = False
    is_fallback: bool = False


def timestamp_key(moment: datetime) -> int:
    return int(moment.strftime("%Y%m%d%H%M"))


def utc_now() -> datetime:
    """Naive UTC datetime (the warehouse stores UTC without a zone, portably)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Recorder:
    """Writes events; one instance per process, safe to share between threads."""

    def __init__(
        self,
        engine: Engine,
        cache_entries: int = DIMENSION_CACHE_ENTRIES,
        *,
        group_commit: bool = True,
    ):
        self.engine = engine
        # Requests recorded at the same time share one transaction (see ``group_commit``);
        # off, each call has its own (the bench compares the two).
        self._group = GroupCommit(self._write_retrying) if group_commit else None
        # Built once per statement shape (bounded by the code, not the data).
        self._lookups: dict[tuple, Select] = {}
        self._inserts: dict[tuple, TextClause] = {}
        # An LRU reorders itself on every read, so unlike a dict it needs a lock across threads.
        self._cache: cachetools.LRUCache[tuple, int] = cachetools.LRUCache(cache_entries)
        self._cache_lock = threading.Lock()

    @property
    def cached_keys(self) -> int:
        """How many dimension keys this process remembers (at most ``cache_entries``)."""
        return len(self._cache)

    def _remember(self, learned: dict[tuple, int]) -> None:
        # Images are too many to keep; the other dimensions are small and stable.
        if not self._cache.maxsize:  # IMGCLASS_DIMENSION_CACHE_ENTRIES=0: no cache at all
            return  # (an LRUCache of size 0 raises on every insert)
        with self._cache_lock:
            for key, value in learned.items():
                if key[0] != "image":
                    self._cache[key] = value

    def record(self, events: Sequence[Event]) -> None:
        """Write ``events``; returns once they are committed, raises if they could not be.

        Events of other threads recording at the same moment may share the transaction
        (group commit); each caller still returns only after the commit that carried its
        events, and a failure is reported to the caller whose events caused it.
        """
        if not events:
            return
        if self._group is None:
            self._write_retrying(events)
        else:
            self._group.submit(events)

    def _write_retrying(self, events: Sequence[Event]) -> None:
        try:
            self._write(events)
        except IntegrityError:
            # A cached dimension key can go stale when `imgclass users forget` or
            # `db prune` deletes its row under a running server: forget the cache and
            # look every key up again, once.
            with self._cache_lock:
                self._cache.clear()
            self._write(events)

    def _write(self, events: Sequence[Event]) -> None:
        learned: dict[tuple, int] = {}
        with self.engine.connect() as conn:
            conn.execution_options(**WRITE)
            with conn.begin():
                self._create_dimensions_in_order(conn, events, learned)
                rows = [self._fact_row(conn, event, learned) for event in events]
                conn.execute(api_event_fact.insert(), rows)
                add_facts(conn, rows)
        self._remember(learned)

    def record_batch(self, events: Sequence[Event]) -> list[int]:
        """Write many events in one transaction; returns their event ids, in order.

        The same rows as ``record``, for bulk loads (demo data, imports): image keys are
        looked up and inserted a few hundred at a time instead of one by one, and the
        facts go in as one multi-row insert.
        """
        if not events:
            return []
        learned: dict[tuple, int] = {}
        with self.engine.connect() as conn:
            conn.execution_options(**WRITE)
            with conn.begin():
                images = [event.image for event in events]
                for image, key in zip(images, self._image_keys(conn, images), strict=True):
                    if image is not None:
                        learned[("image", *_image_natural(image))] = key
                rows = [self._fact_row(conn, event, learned) for event in events]
                insert = api_event_fact.insert().returning(
                    api_event_fact.c.event_id, sort_by_parameter_order=True
                )
                ids = list(conn.execute(insert, rows).scalars())
                add_facts(conn, rows)
        self._remember(learned)
        return ids

    def _create_dimensions_in_order(
        self, conn: Connection, events: Sequence[Event], learned: dict
    ) -> None:
        """Resolve every dimension key of ``events`` in one global order (no deadlocks)."""
        for moment in sorted({e.event_time.replace(second=0, microsecond=0) for e in events}):
            self._time_key(conn, moment, learned)
        for who in sorted({_clean_requester(e.requester) for e in events}, key=_user_natural):
            self._user_key(conn, who, learned)
        images = {e.image for e in events if e.image is not None}
        for image in sorted(images, key=_image_natural):
            self._image_key(conn, image, learned)
        for cls in sorted({e.predicted for e in events if e.predicted}, key=lambda c: c.class_id):
            self._class_key(conn, cls, learned)
        models = {e.model for e in events if e.model is not None}
        for model in sorted(models, key=lambda m: (m.name, m.version, m.sha256)):
            self._model_key(conn, model, learned)

    # -- facts -------------------------------------------------------------

    def _fact_row(self, conn: Connection, event: Event, learned: dict) -> dict:
        return {
            "request_id": event.request_id,
            "timestamp_key": self._time_key(conn, event.event_time, learned),
            "user_key": self._user_key(conn, _clean_requester(event.requester), learned),
            "image_key": self._image_key(conn, event.image, learned),
            "class_key": self._class_key(conn, event.predicted, learned),
            "model_key": self._model_key(conn, event.model, learned),
            "event_time": event.event_time,
            "time_taken": float(event.time_taken_ms),
            "request_count": 1,
            "confidence": event.confidence,
            "status_code": event.status_code,
            "error_code": event.error_code,
            "endpoint": event.endpoint,
            "cache_hit": event.cache_hit,
            "is_fallback": event.is_fallback,
        }

    # -- dimensions ----------------------------------------------------------

    def _get_or_create(
        self, conn: Connection, table: Table, key: str, natural: dict, extra: dict | None = None
    ) -> int:
        """Key of the row matching ``natural``, inserting it if absent (race-free).

        On SQLite the write transaction is BEGIN IMMEDIATE, so writers are already
        serialised; ON CONFLICT DO NOTHING is what keeps this race-free on PostgreSQL,
        where two transactions can both miss the SELECT.
        """
        lookup = self._lookup(table, key, tuple(natural))
        found = conn.execute(lookup, natural).scalar()
        if found is not None:
            return found
        values = {**natural, **(extra or {})}
        conn.execute(self._insert_new(table, tuple(values)), values)
        return conn.execute(lookup, natural).scalar_one()

    def _lookup(self, table: Table, key: str, columns: tuple[str, ...]) -> Select:
        """``SELECT key FROM table WHERE col = :col …``, built once per shape and reused.

        Building the expression anew for every event cost more than running it (half of
        record()'s time for a new image, by cProfile); SQLAlchemy caches the compiled form.
        """
        shape = (table.name, key, columns)
        lookup = self._lookups.get(shape)
        if lookup is None:
            where = and_(*(table.c[col] == bindparam(col) for col in columns))
            lookup = self._lookups[shape] = select(table.c[key]).where(where)
        return lookup

    def _insert_new(self, table: Table, columns: tuple[str, ...]) -> TextClause:
        """``INSERT … ON CONFLICT DO NOTHING`` (same text on SQLite and PostgreSQL), built once.

        SQLAlchemy cannot cache its dialects' ``on_conflict_do_nothing`` constructs and
        compiled one for every new dimension row (a third of record()'s time for a new
        image); a text statement with typed parameters compiles once.
        """
        shape = (table.name, columns)
        insert = self._inserts.get(shape)
        if insert is None:
            statement = (
                f"INSERT INTO {table.name} ({', '.join(columns)}) "
                f"VALUES ({', '.join(':' + c for c in columns)}) ON CONFLICT DO NOTHING"
            )
            types = [bindparam(c, type_=table.c[c].type) for c in columns]
            insert = self._inserts[shape] = text(statement).bindparams(*types)
        return insert

    def _cached(self, learned: dict, cache_key: tuple, create) -> int:
        with self._cache_lock:
            found = self._cache.get(cache_key)
        if found is None:
            found = learned.get(cache_key)
        if found is None:
            found = create()
            learned[cache_key] = found
        return found

    def _time_key(self, conn: Connection, moment: datetime, learned: dict) -> int:
        minute = moment.replace(second=0, microsecond=0)
        key = timestamp_key(minute)

        def create() -> int:
            iso = minute.isocalendar()
            values = {
                "minute_start": minute,
                "minute": minute.minute,
                "hour": minute.hour,
                "day": minute.date(),
                "weekday": iso.weekday,
                "week": iso.week,
                "month": minute.month,
                "quarter": (minute.month - 1) // 3 + 1,
                "year": minute.year,
            }
            return self._get_or_create(
                conn, time_dim, "timestamp_key", {"timestamp_key": key}, values
            )

        return self._cached(learned, ("time", key), create)

    def _user_key(self, conn: Connection, who: Requester, learned: dict) -> int:
        user_id, ip_address, user_agent = _user_natural(who)
        natural = {"user_id": user_id, "ip_address": ip_address, "user_agent": user_agent}
        return self._cached(
            learned,
            ("user", *natural.values()),
            lambda: self._get_or_create(
                conn, user_dim, "user_key", natural, {"username": who.username}
            ),
        )

    def _image_key(self, conn: Connection, image: ImageFacts | None, learned: dict) -> int:
        if image is None:
            return NONE_KEY
        sha256, filename = _image_natural(image)
        natural = {"image_id": sha256, "image_filename": filename}
        extra = {
            "width": image.width,
            "height": image.height,
            "format": image.format,
            "bytes": image.n_bytes,
            "brightness": image.brightness,
        }
        # Remembered for this transaction only (see ``record``): there are too many to cache.
        return self._cached(
            learned,
            ("image", sha256, filename),
            lambda: self._get_or_create(conn, image_dim, "image_key", natural, extra),
        )

    def _image_keys(self, conn: Connection, images: Sequence[ImageFacts | None]) -> list[int]:
        """Keys of many images: existing rows looked up, missing ones inserted, in chunks."""
        wanted = {_image_natural(i): i for i in images if i is not None}
        found: dict[tuple[str, str], int] = {}

        def look_up(keys: list[tuple[str, str]]) -> None:
            for start in range(0, len(keys), BULK_CHUNK):
                shas = {sha for sha, _ in keys[start : start + BULK_CHUNK]}
                rows = conn.execute(
                    select(
                        image_dim.c.image_key, image_dim.c.image_id, image_dim.c.image_filename
                    ).where(image_dim.c.image_id.in_(shas))
                )
                for key, sha, name in rows:
                    if (sha, name) in wanted:
                        found[(sha, name)] = key

        look_up(list(wanted))
        missing = [natural for natural in wanted if natural not in found]
        if missing:
            conn.execute(
                self._insert_new(image_dim, IMAGE_COLUMNS),
                [
                    {
                        "image_id": sha,
                        "image_filename": name,
                        "width": wanted[(sha, name)].width,
                        "height": wanted[(sha, name)].height,
                        "format": wanted[(sha, name)].format,
                        "bytes": wanted[(sha, name)].n_bytes,
                        "brightness": wanted[(sha, name)].brightness,
                    }
                    for sha, name in missing
                ],
            )
            look_up(missing)
        return [NONE_KEY if i is None else found[_image_natural(i)] for i in images]

    def _class_key(self, conn: Connection, cls: ClassFacts | None, learned: dict) -> int:
        if cls is None:
            return NONE_KEY
        return self._cached(
            learned,
            ("class", cls.class_id),
            lambda: self._get_or_create(
                conn,
                class_dim,
                "class_key",
                {"class_id": cls.class_id},
                {
                    "class_name": cls.class_name[:128],
                    "wnid": cls.wnid,
                    "label": class_label(cls.class_id, cls.class_name),
                },
            ),
        )

    def _model_key(self, conn: Connection, model: ModelFacts | None, learned: dict) -> int:
        if model is None:
            return NONE_KEY
        natural = {"model_name": model.name, "model_version": model.version, "sha256": model.sha256}
        return self._cached(
            learned,
            ("model", *natural.values()),
            lambda: self._get_or_create(conn, model_dim, "model_key", natural),
        )


def _text(value: str, limit: int) -> str:
    # PostgreSQL text cannot hold NUL characters; the column lengths are enforced there too.
    return value.replace("\x00", "")[:limit]


def _clean_requester(who: Requester) -> Requester:
    return Requester(
        who.user_id,
        _text(who.username, 64),
        _text(who.ip_address, 45),
        _text(who.user_agent, MAX_USER_AGENT),
    )


def _user_natural(who: Requester) -> tuple[int, str, str]:
    return (who.user_id, _text(who.ip_address, 45), _text(who.user_agent, MAX_USER_AGENT))


def _image_natural(image: ImageFacts) -> tuple[str, str]:
    return (image.sha256, _text(image.filename, MAX_FILENAME))
