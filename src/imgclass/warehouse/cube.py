"""The analytics cube: group, filter, measure, roll up and pivot the star schema.

A ``CubeQuery`` names dimensions and measures from two whitelists (``DIMENSIONS``,
``MEASURES``) and typed filter values; ``Cube.run`` turns it into one SQLAlchemy Core
``SELECT … GROUP BY`` over ``api_event_fact`` joined to the dimensions it needs, and
shapes the rows. Request text never reaches SQL as text: names select expressions from
the whitelists, values are bound parameters, and the few constants inside expressions
are ours (``_int``). ``cube_params`` turns strings (HTTP, CLI) into a ``CubeQuery``.

Dimension values: time grains are ISO strings ("2026-11-25T06:32", "2026-11-25T06:00",
"2026-11-25", "2026-W48", "2026-11", "2026-Q4", "2026"; UTC, ISO weeks), ``weekday``
1 (Monday)…7, ``hour_of_day`` 0…23, ``class`` the class label ("tabby", "none" for a
failed request), ``model`` "name@version", ``concept:N`` the class's WordNet ancestor
at depth N (0 = animal, artifact, …; see scripts/build_concepts.py).

Filters are evaluated on the fact table's own columns (key ranges, ``IN`` subqueries on
a dimension), so they can use the fact indexes and never multiply rows.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Engine,
    Float,
    Integer,
    String,
    Table,
    and_,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.sql import ColumnElement

from imgclass.errors import BadRequest
from imgclass.warehouse.percentile import ordered_percentile, percentile_cont
from imgclass.warehouse.recorder import timestamp_key
from imgclass.warehouse.schema import (
    NONE_KEY,
    agg_day_class,
    agg_day_outcome,
    agg_day_user,
    agg_hour_outcome,
    api_event_fact,
    class_concept,
    class_dim,
    concept_dim,
    image_dim,
    model_dim,
    prediction_feedback,
    time_dim,
    user_dim,
)

TIME_GRAINS = ("minute", "hour", "day", "week", "month", "quarter", "year")
DIMENSIONS = (
    *TIME_GRAINS,
    "weekday",
    "hour_of_day",
    "user",
    "ip",
    "user_agent",
    "class",
    "model",
    "status",
    "image_format",
    "error_code",
    "cache_hit",
    "fallback",
)
CONCEPT_PREFIX = "concept:"  # "concept:N" is a dimension for every depth N
PERCENTILES = {"p50_time_ms": 0.50, "p95_time_ms": 0.95, "p99_time_ms": 0.99}
MEASURES = (
    "requests",
    "errors",
    "error_rate",
    "avg_time_ms",
    *PERCENTILES,
    "min_time_ms",
    "max_time_ms",
    "avg_confidence",
    "distinct_users",
    "distinct_images",
    "cache_hit_rate",
    "fallback_rate",
    "feedback_count",
    "accuracy",
)
COUNT_MEASURES = frozenset(
    {"requests", "errors", "distinct_users", "distinct_images", "feedback_count"}
)
DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
MAX_PIVOT_COLUMNS = 200
MAX_PIVOT_SOURCE_ROWS = 100_000
LEVEL_COLUMN = "_level"  # with rollup: how many group_by dimensions a table row is grouped by
MEASURE_COLUMN = "measure"  # labels the rows of a pivot without other dimensions

f = api_event_fact
ts = f.c.timestamp_key


def int_constant(n: int) -> ColumnElement:
    """An integer constant of ours, inlined so that GROUP BY matches the SELECT on PostgreSQL."""
    return literal_column(str(int(n)), Integer)


def _ratio(numerator: ColumnElement, denominator: ColumnElement) -> ColumnElement:
    """numerator / denominator as a float; NULL when the denominator is 0."""
    return cast(numerator, Float) / cast(func.nullif(denominator, int_constant(0)), Float)


# -- the query ---------------------------------------------------------------------


@dataclass(frozen=True)
class CubeQuery:
    """A validated cube request. Filters hold typed values (see ``cube_params``)."""

    group_by: tuple[str, ...] = ()
    measures: tuple[str, ...] = ("requests",)
    filters: tuple[tuple[str, tuple], ...] = ()  # (dimension or "concept", values): AND of INs
    time_from: datetime | None = None  # inclusive, naive UTC
    time_to: datetime | None = None  # exclusive, naive UTC
    order: tuple[tuple[str, bool], ...] = ()  # (column, descending)
    limit: int = DEFAULT_LIMIT
    rollup: bool = False
    pivot: str | None = None


@dataclass
class CubeResult:
    dimensions: list[str]
    measures: list[str]
    rows: list[dict]
    truncated: bool
    totals: dict | None = None
    subtotals: list[dict] | None = None
    pivot: str | None = None
    columns: list[str] = field(default_factory=list)  # output columns, in order

    def to_json(self) -> dict:
        body: dict[str, Any] = {
            "dimensions": self.dimensions,
            "measures": self.measures,
            "rows": self.rows,
        }
        if self.pivot is not None:
            body["pivot"] = self.pivot
            body["columns"] = self.columns
        if self.totals is not None:
            body["totals"] = self.totals
            body["subtotals"] = self.subtotals or []
        body["truncated"] = self.truncated
        return body


# -- sources: the facts, or an aggregate that holds everything a query needs -----------

DAY_GRAINS = ("day", "month", "quarter", "year")
ADDITIVE_MEASURES = frozenset(
    {
        "requests",
        "errors",
        "error_rate",
        "avg_time_ms",
        "min_time_ms",
        "max_time_ms",
        "avg_confidence",
        "cache_hit_rate",
        "fallback_rate",
    }
)


@dataclass(frozen=True)
class Source:
    """A table the cube can read: ``api_event_fact``, or a daily or hourly aggregate of it."""

    table: Table
    dimensions: frozenset[str]  # dimensions and filters it can answer ("concept" = any depth)
    measures: frozenset[str]
    time_column: str = "timestamp_key"
    time_scale: int = 1  # timestamp_key (YYYYMMDDHHMM) // time_scale = its time key

    def aligned(self, moment: datetime | None) -> bool:
        """Whether a from/to bound falls on this source's time buckets."""
        if moment is None or self.is_fact:
            return True
        if moment.second or moment.microsecond or moment.minute:
            return False
        return self.time_scale == 100 or moment.hour == 0

    @property
    def is_fact(self) -> bool:
        return self.table is api_event_fact

    def col(self, name: str) -> ColumnElement:
        return self.table.c[name]

    def answers(self, name: str) -> bool:
        if name.startswith(CONCEPT_PREFIX):
            name = "concept"
        return name in self.dimensions


FACTS = Source(api_event_fact, frozenset({*DIMENSIONS, "concept"}), frozenset(MEASURES))
OUTCOME_DIMENSIONS = frozenset({"model", "status", "error_code", "cache_hit", "fallback"})
DAY = {"time_column": "day_key", "time_scale": 10**4}
# Smallest first: the first one that answers a query is used.
AGGREGATE_SOURCES = (
    Source(agg_day_outcome, OUTCOME_DIMENSIONS | set(DAY_GRAINS), ADDITIVE_MEASURES, **DAY),
    Source(
        agg_day_user,
        frozenset({*DAY_GRAINS, "user", "ip", "user_agent"}),
        ADDITIVE_MEASURES | {"distinct_users"},
        **DAY,
    ),
    Source(
        agg_hour_outcome,
        OUTCOME_DIMENSIONS | {"hour", "hour_of_day", *DAY_GRAINS},
        ADDITIVE_MEASURES,
        time_column="hour_key",
        time_scale=100,
    ),
    Source(agg_day_class, frozenset({*DAY_GRAINS, "class", "concept"}), ADDITIVE_MEASURES, **DAY),
)


def choose_source(query: CubeQuery, dims: Sequence[str], aggregates: bool = True) -> Source:
    """The smallest table that answers ``query`` grouped by ``dims`` exactly."""
    if aggregates:
        names = [*dims, *(name for name, _ in query.filters)]
        for source in AGGREGATE_SOURCES:
            if (
                source.aligned(query.time_from)
                and source.aligned(query.time_to)
                and all(source.answers(n) for n in names)
                and set(query.measures) <= source.measures
            ):
                return source
    return FACTS


# -- joins ---------------------------------------------------------------------------


class _Joins:
    """The dimension tables one query needs, joined once each to its source."""

    def __init__(self, source: Source = FACTS):
        self.source = source
        self.tables: dict[str, Any] = {}
        self.concept_depths: dict[int, tuple[Any, Any]] = {}

    def time(self):
        return self._need("time", time_dim)

    def user(self):
        return self._need("user", user_dim)

    def cls(self):
        return self._need("class", class_dim)

    def model(self):
        return self._need("model", model_dim)

    def image(self):
        return self._need("image", image_dim)

    def feedback(self):
        return self._need("feedback", prediction_feedback)

    def concept(self, depth: int):
        self.cls()
        if depth not in self.concept_depths:
            self.concept_depths[depth] = (
                class_concept.alias(f"cc{depth}"),
                concept_dim.alias(f"cd{depth}"),
            )
        return self.concept_depths[depth][1]

    def _need(self, name: str, table):
        self.tables[name] = table
        return table

    def from_clause(self):
        src = self.source
        joined = src.table
        for name, on in (
            ("time", lambda: time_dim.c.timestamp_key == src.col("timestamp_key")),
            ("user", lambda: user_dim.c.user_key == src.col("user_key")),
            ("class", lambda: class_dim.c.class_key == src.col("class_key")),
            ("model", lambda: model_dim.c.model_key == src.col("model_key")),
            ("image", lambda: image_dim.c.image_key == src.col("image_key")),
        ):
            if name in self.tables:
                joined = joined.join(self.tables[name], on())
        for depth, (cc, cd) in sorted(self.concept_depths.items()):
            # Outer joins: failed requests (class "none") have no concept, and stay counted.
            joined = joined.outerjoin(
                cc,
                and_(cc.c.class_id == class_dim.c.class_id, cc.c.depth == int_constant(depth)),
            ).outerjoin(cd, cd.c.concept_key == cc.c.concept_key)
        if "feedback" in self.tables:
            joined = joined.outerjoin(
                prediction_feedback, prediction_feedback.c.event_id == src.col("event_id")
            )
        return joined


# -- dimensions ----------------------------------------------------------------------

_TIME_SCALE = {"minute": 1, "hour": 100, "day": 10**4, "month": 10**6, "year": 10**8}


def _fmt_time(grain: str, k: int | None) -> str | None:
    if k is None:
        return None
    k = int(k)
    if grain == "year":
        return f"{k:04d}"
    if grain == "quarter":
        return f"{k // 10:04d}-Q{k % 10}"
    if grain == "month":
        return f"{k // 100:04d}-{k % 100:02d}"
    if grain == "week":
        return f"{k // 100:04d}-W{k % 100:02d}"
    if grain == "day":
        return f"{k // 10000:04d}-{k // 100 % 100:02d}-{k % 100:02d}"
    if grain == "hour":
        return f"{_fmt_time('day', k // 100)}T{k % 100:02d}:00"
    return f"{_fmt_time('day', k // 10000)}T{k // 100 % 100:02d}:{k % 100:02d}"


def _time_key(grain: str, joins: _Joins) -> ColumnElement:
    """The integer key of a time grain, from the source's time key (minute, hour or day)."""
    src = joins.source
    base, base_scale = src.col(src.time_column), src.time_scale
    if grain in _TIME_SCALE:
        scale = _TIME_SCALE[grain] // base_scale
        return base if scale == 1 else base // int_constant(scale)
    if grain == "quarter":
        year = base // int_constant(10**8 // base_scale)
        month = (base // int_constant(10**6 // base_scale)) % int_constant(100)
        return year * int_constant(10) + (month + int_constant(2)) // int_constant(3)
    td = joins.time()  # week: the ISO year differs from the calendar year around New Year
    iso_year = case(
        (
            and_(td.c.week >= int_constant(52), td.c.month == int_constant(1)),
            td.c.year - int_constant(1),
        ),
        (
            and_(td.c.week == int_constant(1), td.c.month == int_constant(12)),
            td.c.year + int_constant(1),
        ),
        else_=td.c.year,
    )
    return iso_year * int_constant(100) + td.c.week


def _time_range(grain: str, k: int) -> tuple[int, int]:
    """The timestamp_key range [lo, hi] of one time-grain value."""
    if grain in _TIME_SCALE:
        scale = _TIME_SCALE[grain]
        return k * scale, k * scale + scale - 1
    if grain == "quarter":
        year, quarter = divmod(k, 10)
        first = (year * 100 + (quarter - 1) * 3 + 1) * 10**6
        return first, first + 3 * 10**6 - 1
    monday = date.fromisocalendar(k // 100, k % 100, 1)
    start = datetime(monday.year, monday.month, monday.day)
    return timestamp_key(start), timestamp_key(start + timedelta(days=7)) - 1


def _key_in(column: ColumnElement, table, key: str, where: ColumnElement) -> ColumnElement:
    return column.in_(select(table.c[key]).where(where))


def _concept_match(
    source: Source, values: tuple[str, ...], depth: int | None = None
) -> ColumnElement:
    """class_key of every class under a concept named (or with the wnid) in ``values``.

    With ``depth``: whose ``concept:depth`` is one of them. That is the class's depth in
    ``class_concept``, not the concept's own: below its own depth a class is its own
    concept (``concept:8`` of pizza, at depth 5, is pizza), as ``group_by`` shows it.
    """
    wanted = or_(concept_dim.c.name.in_(values), concept_dim.c.wnid.in_(values))
    if depth is not None:
        wanted = and_(wanted, class_concept.c.depth == depth)
    classes = (
        select(class_dim.c.class_key)
        .join(class_concept, class_concept.c.class_id == class_dim.c.class_id)
        .join(concept_dim, concept_dim.c.concept_key == class_concept.c.concept_key)
        .where(wanted)
    )
    return source.col("class_key").in_(classes)


def _hour_of_day(source: Source) -> ColumnElement:
    key = source.col(source.time_column)
    if source.time_scale == 1:  # YYYYMMDDHHMM
        key = key // int_constant(100)
    return key % int_constant(100)  # YYYYMMDDHH -> HH


def _error_code(source: Source) -> ColumnElement:
    column = source.col("error_code")
    # Aggregates store '' for "no error" (a key column cannot be NULL).
    return column if source.is_fact else func.nullif(column, literal_column("''", String))


def dimension_key(name: str, joins: _Joins) -> ColumnElement:
    """The expression a dimension groups by (its value, or an integer time key)."""
    src = joins.source
    if name in TIME_GRAINS:
        return _time_key(name, joins)
    if name.startswith(CONCEPT_PREFIX):
        return joins.concept(int(name[len(CONCEPT_PREFIX) :])).c.name
    simple: dict[str, Callable[[], ColumnElement]] = {
        "weekday": lambda: joins.time().c.weekday,
        "hour_of_day": lambda: _hour_of_day(src),
        "user": lambda: joins.user().c.username,
        "ip": lambda: joins.user().c.ip_address,
        "user_agent": lambda: joins.user().c.user_agent,
        "class": lambda: joins.cls().c.label,
        "model": lambda: case(
            (src.col("model_key") == int_constant(NONE_KEY), literal_column("'none'", String)),
            else_=joins.model().c.model_name
            + literal_column("'@'", String)
            + joins.model().c.model_version,
        ),
        "status": lambda: src.col("status_code"),
        "image_format": lambda: joins.image().c.format,
        "error_code": lambda: _error_code(src),
        "cache_hit": lambda: src.col("cache_hit"),
        "fallback": lambda: src.col("is_fallback"),
    }
    return simple[name]()


def format_value(name: str, value: Any) -> Any:
    if name in TIME_GRAINS:
        return _fmt_time(name, value)
    if value is None:
        return None
    if name in ("cache_hit", "fallback"):
        return bool(value)
    if name in ("weekday", "hour_of_day", "status"):
        return int(value)
    return value


def dimension_filter(name: str, values: tuple, source: Source = FACTS) -> ColumnElement:
    """WHERE clause for ``name IN values`` (values typed by cube_params), on source columns."""
    if name in TIME_GRAINS:
        if source.is_fact:
            return or_(*(ts.between(*_time_range(name, v)) for v in values))
        key, scale = source.col(source.time_column), source.time_scale
        return or_(
            *(
                key.between(lo // scale, hi // scale)
                for lo, hi in (_time_range(name, v) for v in values)
            )
        )
    if name == "concept":
        return _concept_match(source, values)
    if name.startswith(CONCEPT_PREFIX):
        return _concept_match(source, values, int(name[len(CONCEPT_PREFIX) :]))
    if name == "weekday":
        return _key_in(ts, time_dim, "timestamp_key", time_dim.c.weekday.in_(values))
    if name == "hour_of_day":
        return _hour_of_day(source).in_(values)
    if name in ("user", "ip", "user_agent"):
        column = {"user": "username", "ip": "ip_address", "user_agent": "user_agent"}[name]
        return _key_in(source.col("user_key"), user_dim, "user_key", user_dim.c[column].in_(values))
    if name == "class":
        where = or_(class_dim.c.label.in_(values), class_dim.c.wnid.in_(values))
        return _key_in(source.col("class_key"), class_dim, "class_key", where)
    if name == "model":
        full = model_dim.c.model_name + literal_column("'@'", String) + model_dim.c.model_version
        where = or_(model_dim.c.model_name.in_(values), full.in_(values))
        return _key_in(source.col("model_key"), model_dim, "model_key", where)
    if name == "status":
        return or_(*(source.col("status_code").between(lo, hi) for lo, hi in values))
    if name == "image_format":
        return _key_in(f.c.image_key, image_dim, "image_key", image_dim.c.format.in_(values))
    if name == "error_code":
        return source.col("error_code").in_(values)
    if name in ("cache_hit", "fallback"):
        column = source.col("cache_hit" if name == "cache_hit" else "is_fallback")
        return or_(*(column == bool(v) for v in values))
    raise ValueError(f"no filter for {name!r}")  # cube_params only passes known names


def time_range_filter(
    time_from: datetime | None, time_to: datetime | None, source: Source = FACTS
) -> list:
    """[from, to) on the indexed minute key, refined by event_time below a minute.

    On an aggregate (only chosen when the bounds fall on its buckets) it is a key range.
    """
    where = []
    if not source.is_fact:
        key, scale = source.col(source.time_column), source.time_scale
        if time_from is not None:
            where.append(key >= timestamp_key(time_from) // scale)
        if time_to is not None:
            where.append(key < timestamp_key(time_to) // scale)
        return where
    if time_from is not None:
        where.append(ts >= timestamp_key(time_from))
        if time_from.second or time_from.microsecond:
            where.append(f.c.event_time >= time_from)
    if time_to is not None:
        if time_to.second or time_to.microsecond:
            where += [ts <= timestamp_key(time_to), f.c.event_time < time_to]
        else:
            where.append(ts < timestamp_key(time_to))
    return where


def where_clauses(query: CubeQuery, source: Source = FACTS) -> list:
    """The WHERE clauses of a query's filters and time range, on the source's own columns."""
    where = time_range_filter(query.time_from, query.time_to, source)
    where += [dimension_filter(name, values, source) for name, values in query.filters]
    return where


# -- measures ------------------------------------------------------------------------


def _flag(column: ColumnElement) -> ColumnElement:
    return case((column, int_constant(1)), else_=int_constant(0))


def _aggregate_measure(name: str, src: Source) -> ColumnElement:
    """A measure from an aggregate's sums (only the additive ones get here)."""
    total = {c: func.sum(src.col(c)) for c in ("events", "requests", "errors")}
    return {
        "requests": lambda: func.coalesce(total["requests"], int_constant(0)),
        "errors": lambda: func.coalesce(total["errors"], int_constant(0)),
        "error_rate": lambda: _ratio(total["errors"], total["requests"]),
        "avg_time_ms": lambda: _ratio(func.sum(src.col("time_sum")), total["events"]),
        "min_time_ms": lambda: func.min(src.col("time_min")),
        "max_time_ms": lambda: func.max(src.col("time_max")),
        "avg_confidence": lambda: _ratio(
            func.sum(src.col("confidence_sum")), func.sum(src.col("confidence_count"))
        ),
        "cache_hit_rate": lambda: _ratio(func.sum(src.col("cache_hits")), total["events"]),
        "fallback_rate": lambda: _ratio(func.sum(src.col("fallbacks")), total["events"]),
    }[name]()


def measure_expr(name: str, joins: _Joins) -> ColumnElement:
    if name == "distinct_users":
        return func.count(joins.user().c.username.distinct())
    if not joins.source.is_fact:
        return _aggregate_measure(name, joins.source)
    requests = func.coalesce(func.sum(f.c.request_count), int_constant(0))
    errors = func.coalesce(
        func.sum(
            case((f.c.status_code >= int_constant(400), f.c.request_count), else_=int_constant(0))
        ),
        int_constant(0),
    )
    if name in PERCENTILES:
        return percentile_cont(f.c.time_taken, PERCENTILES[name])
    if name == "distinct_images":
        image = joins.image()
        return func.count(
            case((f.c.image_key != int_constant(NONE_KEY), image.c.image_id), else_=None).distinct()
        )
    if name in ("feedback_count", "accuracy"):
        fb = joins.feedback()
        given = func.count(fb.c.feedback_id)
        if name == "feedback_count":
            return given
        return _ratio(
            func.sum(case((fb.c.is_correct, int_constant(1)), else_=int_constant(0))), given
        )
    return {
        "requests": lambda: requests,
        "errors": lambda: errors,
        "error_rate": lambda: _ratio(errors, requests),
        "avg_time_ms": lambda: func.avg(f.c.time_taken),
        "min_time_ms": lambda: func.min(f.c.time_taken),
        "max_time_ms": lambda: func.max(f.c.time_taken),
        "avg_confidence": lambda: func.avg(f.c.confidence),
        "cache_hit_rate": lambda: _ratio(func.sum(_flag(f.c.cache_hit)), func.count()),
        "fallback_rate": lambda: _ratio(func.sum(_flag(f.c.is_fallback)), func.count()),
    }[name]()


def _converter(name: str) -> Callable[[Any], Any]:
    """value -> what the cube returns for column ``name`` (memoised for time keys)."""
    if name in MEASURES:
        return lambda value: _measure_value(name, value)
    if name in TIME_GRAINS:
        seen: dict[Any, Any] = {}

        def time_value(value: Any) -> Any:
            found = seen.get(value)
            if found is None:
                found = seen[value] = _fmt_time(name, value)
            return found

        return time_value
    return lambda value: format_value(name, value)


def _measure_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    return int(value) if name in COUNT_MEASURES else float(value)


# -- running a query -----------------------------------------------------------------


class Cube:
    """Runs ``CubeQuery``s against the warehouse (any SQLAlchemy engine we support)."""

    def __init__(self, engine: Engine, *, aggregates: bool = True):
        self.engine = engine
        self.aggregates = aggregates  # read the aggregates when they answer a query

    def run(self, query: CubeQuery) -> CubeResult:
        if query.pivot is not None:
            result = self._pivot(query)
        else:
            rows, truncated = self._grouped(query, query.group_by, query.order, query.limit)
            result = CubeResult(
                list(query.group_by),
                list(query.measures),
                rows,
                truncated,
                columns=[*query.group_by, *query.measures],
            )
        if query.rollup:
            result.subtotals = []
            for level in range(len(query.group_by) - 1, 0, -1):
                result.subtotals += self._subtotals(query, level, result.rows)
            result.totals = self.totals(query)
        return result

    def _subtotals(self, query: CubeQuery, level: int, shown: list[dict]) -> list[dict]:
        """Subtotals by the first ``level`` dimensions, for the groups of the ``shown`` rows.

        ``limit`` caps the rows, so the subtotals follow them: one per group a shown row
        belongs to (each over all of that group's rows, shown or not), in the query's
        order as far as it names their columns. The database still groups everything;
        only the wanted groups are converted and kept.
        """
        dims = query.group_by[:level]
        wanted = {tuple(row[d] for d in dims) for row in shown}
        if not wanted:
            return []
        order = tuple((n, desc) for n, desc in query.order if n in dims or n in query.measures)
        stmt, _labels = self.statement(query, dims, order, None)
        convert_dims = [_converter(name) for name in dims]
        convert_measures = [(name, _converter(name)) for name in query.measures]
        found = []
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=2000).execute(stmt)
            for row in result:
                key = tuple(c(v) for c, v in zip(convert_dims, row[:level], strict=True))
                if key not in wanted:
                    continue
                values = row[level:]
                found.append(
                    dict(zip(dims, key, strict=True))
                    | {name: c(v) for (name, c), v in zip(convert_measures, values, strict=True)}
                )
                if len(found) == len(wanted):
                    break
        return found

    def totals(self, query: CubeQuery) -> dict:
        """The measures over every row the filters select (no grouping)."""
        return self._grouped(query, (), (), 1)[0][0]

    def stream(self, query: CubeQuery) -> tuple[list[str], Iterator[list], bool]:
        """(columns, rows as lists, truncated) of a plain query, read as they are sent.

        The statement runs now, so a bad query or an unreachable database fails before
        anything is sent, and the first row tells whether ``limit`` cut any off (a window
        count of the groups rides along with each row): a streamed CSV can say so in
        its headers. The remaining rows are fetched while the caller iterates.
        """
        stmt, labels = self.statement(query, query.group_by, query.order, query.limit)
        stmt = stmt.add_columns(func.count().over().label("groups"))
        columns = [*query.group_by, *query.measures]

        def rows() -> Iterator[Any]:
            with self.engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=2000).execute(stmt)
                first = result.fetchone()
                yield 0 if first is None else first._mapping["groups"]
                if first is None:
                    return
                # The statement asks for limit + 1 rows (to detect truncation): send limit.
                for row in itertools.islice(itertools.chain([first], result), query.limit):
                    yield [self._value(name, row._mapping[label]) for name, label in labels]

        streamed = rows()
        groups = next(streamed)
        return columns, streamed, groups > query.limit

    def statement(self, query: CubeQuery, dims: Sequence[str], order, limit: int | None):
        """(SELECT, [(column, label)]) that groups ``query`` by ``dims`` (for EXPLAIN, too)."""
        source = choose_source(query, dims, self.aggregates)
        joins = _Joins(source)
        keys = [dimension_key(name, joins).label(f"d{i}") for i, name in enumerate(dims)]
        measures = [
            measure_expr(name, joins).label(f"m{i}") for i, name in enumerate(query.measures)
        ]
        stmt = (
            select(*keys, *measures)
            .select_from(joins.from_clause())
            .where(*where_clauses(query, source))
        )
        if keys:
            stmt = stmt.group_by(*(key.element for key in keys))
        by_name = {name: key for name, key in zip(dims, keys, strict=True)}
        by_name.update(zip(query.measures, measures, strict=True))
        ordering = []
        for name, descending in order:
            column = by_name[name]
            ordering.append((column.desc() if descending else column.asc()).nulls_last())
        # Every dimension as a tie-breaker: the same query always gives the same rows.
        ordering += [key.asc().nulls_last() for name, key in by_name.items() if name in dims]
        if ordering:
            stmt = stmt.order_by(*ordering)
        if limit is not None:
            stmt = stmt.limit(limit + 1)
        labels = [(name, f"d{i}") for i, name in enumerate(dims)]
        labels += [(name, f"m{i}") for i, name in enumerate(query.measures)]
        return stmt, labels

    # -- internals -------------------------------------------------------------------

    @staticmethod
    def _value(name: str, value: Any) -> Any:
        if name in MEASURES:
            return _measure_value(name, value)
        return format_value(name, value)

    def _grouped(self, query: CubeQuery, dims, order, limit) -> tuple[list[dict], bool]:
        if not dims and set(PERCENTILES) & set(query.measures):
            return [self._totals_with_ordered_percentiles(query)], False
        stmt, labels = self.statement(query, dims, order, limit)
        with self.engine.connect() as conn:
            fetched = conn.execute(stmt).all()
        truncated = limit is not None and len(fetched) > limit
        # Columns come in label order (dimensions, then measures); convert by position,
        # and format each distinct time key once: tens of thousands of rows stay cheap.
        names = [name for name, _ in labels]
        convert = [_converter(name) for name in names]
        rows = [
            dict(zip(names, [c(v) for c, v in zip(convert, row, strict=True)], strict=True))
            for row in fetched[:limit]
        ]
        return rows, truncated

    def _totals_with_ordered_percentiles(self, query: CubeQuery) -> dict:
        """Totals: percentiles read off the latency index (k-th entry), the rest aggregated."""
        others = tuple(m for m in query.measures if m not in PERCENTILES)
        where = where_clauses(query)
        found: dict[str, Any] = {}
        with self.engine.connect() as conn:
            if others:
                aggregated = CubeQuery(
                    measures=others,
                    filters=query.filters,
                    time_from=query.time_from,
                    time_to=query.time_to,
                )
                stmt, labels = self.statement(aggregated, (), (), None)
                row = conn.execute(stmt).one()._mapping
                found = {name: self._value(name, row[label]) for name, label in labels}
            n = conn.execute(select(func.count()).select_from(f).where(*where)).scalar_one()
            values = select(f.c.time_taken).where(*where)
            for name in query.measures:
                if name in PERCENTILES:
                    found[name] = ordered_percentile(
                        conn, values, f.c.time_taken, n, PERCENTILES[name]
                    )
        return {name: found[name] for name in query.measures}

    def _pivot(self, query: CubeQuery) -> CubeResult:
        pivot = query.pivot
        assert pivot is not None
        row_dims = [d for d in query.group_by if d != pivot]
        order = tuple(query.order) + tuple(
            (d, False) for d in row_dims if d not in dict(query.order)
        )
        dims = (*row_dims, pivot)
        source, truncated = self._grouped(query, dims, order, MAX_PIVOT_SOURCE_ROWS)
        if truncated:
            raise BadRequest(
                f"pivot: more than {MAX_PIVOT_SOURCE_ROWS:,} cells; filter the query or group "
                "by fewer dimensions",
                code="bad_request",
            )
        stmt, _labels = self.statement(
            CubeQuery(
                measures=(), filters=query.filters, time_from=query.time_from, time_to=query.time_to
            ),
            (pivot,),
            (),
            MAX_PIVOT_COLUMNS,
        )
        with self.engine.connect() as conn:
            values = [format_value(pivot, row[0]) for row in conn.execute(stmt)]
        if len(values) > MAX_PIVOT_COLUMNS:
            raise BadRequest(
                f"pivot: {pivot} has more than {MAX_PIVOT_COLUMNS} values; filter it "
                f"(e.g. {pivot}=a,b,c) or pivot another dimension",
                code="bad_request",
            )

        if not row_dims:
            # Pivoting the only dimension: one row per measure, labelled, so that even a
            # selection without any value still has a header and a row.
            cells: dict[str, dict] = {m: {MEASURE_COLUMN: m} for m in query.measures}
            for value in values:
                for m in query.measures:
                    cells[m][pivot_column(pivot, value)] = None
            for row in source:
                for m in query.measures:
                    cells[m][pivot_column(pivot, row[pivot])] = row[m]
            return CubeResult(
                [],
                list(query.measures),
                list(cells.values())[: query.limit],
                len(cells) > query.limit,
                pivot=pivot,
                columns=[MEASURE_COLUMN, *(pivot_column(pivot, v) for v in values)],
            )

        def column(value: Any, measure: str) -> str:
            name = pivot_column(pivot, value)
            return name if len(query.measures) == 1 else f"{name}|{measure}"

        pivot_columns = [column(v, m) for v in values for m in query.measures]
        out: dict[tuple, dict] = {}
        for row in source:
            key = tuple(row[d] for d in row_dims)
            target = out.get(key)
            if target is None:
                target = out[key] = {d: row[d] for d in row_dims} | dict.fromkeys(pivot_columns)
            for m in query.measures:
                target[column(row[pivot], m)] = row[m]
        rows = list(out.values())
        return CubeResult(
            row_dims,
            list(query.measures),
            rows[: query.limit],
            len(rows) > query.limit,
            pivot=pivot,
            columns=[*row_dims, *pivot_columns],
        )


def pivot_column(pivot: str, value: Any) -> str:
    """The name of a pivot value's column: ``user=alice``, ``cache_hit=true``, ``error_code=null``.

    Prefixed with the dimension so that no value can take the name of another column
    (a user called ``day``, or ``requests``): dimension and measure names never hold ``=``.
    """
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return f"{pivot}={text}"


# -- CSV -----------------------------------------------------------------------------

# Cells that a spreadsheet would run as a formula (CSV injection): prefixed with ' so that
# a user agent or file name like "=HYPERLINK(…)" is shown as the text it is.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_lines(columns: Sequence[str], rows: Iterator[Sequence]) -> Iterator[str]:
    """A header line, then one line per row (RFC 4180 quoting, formulas neutralised)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")

    def line(cells) -> str:
        buf.seek(0)
        buf.truncate()
        writer.writerow([_csv_cell(c) for c in cells])
        return buf.getvalue()

    yield line(columns)
    for row in rows:
        yield line(row)


def result_table(result: CubeResult) -> tuple[list[str], Iterator[list]]:
    """(columns, rows) of a result as a table: its rows, then subtotals and the total.

    With rollup a last column, ``_level``, says how many ``group_by`` dimensions a row is
    grouped by (all of them on the rows, fewer on subtotals, 0 on the total), and the
    rolled-up cells are None (empty in CSV): no marker a real value could also be.
    """
    rollup = result.totals is not None
    columns = [*result.columns, LEVEL_COLUMN] if rollup else list(result.columns)
    everything = len(result.dimensions)

    def rows() -> Iterator[list]:
        for row in result.rows:
            cells = [row.get(c) for c in result.columns]
            yield [*cells, everything] if rollup else cells
        for row in result.subtotals or []:
            level = sum(1 for d in result.dimensions if d in row)
            yield [*(row.get(c) for c in result.columns), level]
        if result.totals is not None:
            yield [*(result.totals.get(c) for c in result.columns), 0]

    return columns, rows()
