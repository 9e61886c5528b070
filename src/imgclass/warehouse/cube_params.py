"""Request parameters (strings from a URL or the command line) → a validated ``CubeQuery``.

Shared by the HTTP API and ``imgclass stats`` so both accept exactly the same language:

* ``group_by``, ``measures``, ``order`` (``-`` for descending): comma-separated names;
* a filter per dimension (``user=alice,bob``, ``class=tabby``, ``day=2026-11-25``,
  ``status=4xx``, ``cache_hit=true``, ``concept=dog``): a comma-separated list of values,
  any of which matches. Values are read as one CSV record, so a value that contains a
  comma is written in double quotes (``user_agent="Mozilla/5.0 (X11, Linux)"``).
  Class and concept names and image formats are canonicalised here, in any case;
  an unknown concept is refused (the concepts are a fixed, shipped set);
* ``from``/``to``: ISO date or datetime, UTC unless it carries an offset; ``from`` is
  inclusive, a ``to`` date includes that whole day, a ``to`` datetime is exclusive;
* ``limit`` (1…100000), ``rollup`` (true/false), ``pivot`` (one of the ``group_by``).

Anything else is a ``BadRequest`` whose message starts with the offending parameter.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta

from imgclass.errors import BadRequest
from imgclass.warehouse.concepts import imagenet_concepts, resolve_class, resolve_concept
from imgclass.warehouse.cube import (
    CONCEPT_PREFIX,
    DEFAULT_LIMIT,
    DIMENSIONS,
    MAX_LIMIT,
    MEASURES,
    TIME_GRAINS,
    CubeQuery,
)

MAX_VALUES = 1000  # values in one filter
MAX_VALUE_LENGTH = 512
MAX_GROUP_BY = 8
TIME_PARAMS = ("from", "to")
FILTER_PARAMS = (*DIMENSIONS, "concept")
CUBE_PARAMS = ("group_by", "measures", "order", "limit", "rollup", "pivot")

_TIME_FORMATS = {
    "minute": re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})"),
    "hour": re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2})(?::00)?"),
    "day": re.compile(r"(\d{4})-(\d{2})-(\d{2})"),
    "week": re.compile(r"(\d{4})-W(\d{2})"),
    "month": re.compile(r"(\d{4})-(\d{2})"),
    "quarter": re.compile(r"(\d{4})-Q([1-4])"),
    "year": re.compile(r"(\d{4})"),
}
_EXAMPLES = {
    "minute": "2026-11-25T06:32",
    "hour": "2026-11-25T06:00",
    "day": "2026-11-25",
    "week": "2026-W48",
    "month": "2026-11",
    "quarter": "2026-Q4",
    "year": "2026",
}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_STATUS = re.compile(r"([1-5])(\d\d|xx)")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def bad(parameter: str, message: str) -> BadRequest:
    return BadRequest(f"{parameter}: {message}", code="bad_request")


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:40] + "…")


def split_names(parameter: str, raw: str) -> list[str]:
    names = [part.strip() for part in raw.split(",")]
    if not raw.strip() or any(not n for n in names):
        raise bad(parameter, f"expected a comma-separated list of names, got {_shown(raw)}")
    if len(set(names)) != len(names):
        raise bad(parameter, "a name is repeated")
    return names


def split_values(parameter: str, raw: str) -> tuple[str, ...]:
    """A filter's values: one CSV record, so "double quotes" protect commas."""
    try:
        values = next(csv.reader([raw], skipinitialspace=True, strict=True), [])
    except csv.Error as exc:
        raise bad(parameter, f"cannot read the value list ({exc})") from exc
    values = [v.strip() for v in values]
    if not values or any(not v for v in values):
        raise bad(parameter, "empty value; give one or more comma-separated values")
    if len(values) > MAX_VALUES:
        raise bad(parameter, f"{len(values)} values; at most {MAX_VALUES}")
    if any(len(v) > MAX_VALUE_LENGTH for v in values):
        raise bad(parameter, f"a value is longer than {MAX_VALUE_LENGTH} characters")
    return tuple(values)


# -- dimension names ---------------------------------------------------------------------


def concept_depth(name: str, parameter: str | None = None) -> int | None:
    """N for a ``concept:N`` dimension name, None for other names; 400 when N is invalid.

    The error names ``parameter`` (``group_by``) when the name is a value of one, else the
    name itself (a ``concept:N=…`` filter parameter).
    """
    if not name.startswith(CONCEPT_PREFIX):
        return None
    raw = name[len(CONCEPT_PREFIX) :]
    top = imagenet_concepts().max_depth
    if not raw.isdigit() or int(raw) > top:
        raise bad(
            parameter or name[:40],
            f"{_shown(name)}: concept depth must be an integer from 0 to {top}",
        )
    return int(raw)


def check_dimension(parameter: str, name: str) -> str:
    if name in DIMENSIONS or concept_depth(name, parameter) is not None:
        return name
    raise bad(
        parameter,
        f"unknown dimension {_shown(name)}; known: {', '.join(DIMENSIONS)}, concept:N",
    )


def parse_measures(raw: str | None, parameter: str = "measures") -> tuple[str, ...]:
    if raw is None:
        return ("requests",)
    names = split_names(parameter, raw)
    for name in names:
        if name not in MEASURES:
            raise bad(parameter, f"unknown measure {_shown(name)}; known: {', '.join(MEASURES)}")
    return tuple(names)


# -- filter values -----------------------------------------------------------------------


def time_value(grain: str, raw: str, parameter: str | None = None) -> int:
    """The integer key of a time-grain value ("2026-11-25" → 20261125)."""
    match = _TIME_FORMATS[grain].fullmatch(raw)
    parameter = parameter or grain
    if not match:
        raise bad(parameter, f"expected a {grain} like {_EXAMPLES[grain]}, got {_shown(raw)}")
    parts = [int(p) for p in match.groups()]
    try:
        if grain == "week":
            date.fromisocalendar(parts[0], parts[1], 1)
            return parts[0] * 100 + parts[1]
        if grain == "quarter":
            return parts[0] * 10 + parts[1]
        if grain == "year":
            return parts[0]
        if grain == "month":
            date(parts[0], parts[1], 1)
            return parts[0] * 100 + parts[1]
        day = date(parts[0], parts[1], parts[2])
        if grain in ("hour", "minute"):
            datetime(day.year, day.month, day.day, *parts[3:])
    except ValueError as exc:
        raise bad(parameter, f"{_shown(raw)} is not a valid {grain} ({exc})") from exc
    key = 0
    for part, width in zip(parts, (4, 2, 2, 2, 2), strict=False):
        key = key * 10**width + part
    return key


def _int_value(parameter: str, raw: str, low: int, high: int) -> int:
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise bad(parameter, f"expected an integer from {low} to {high}, got {_shown(raw)}")
    return int(raw)


def _bool_value(parameter: str, raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise bad(parameter, f"expected true or false, got {_shown(raw)}")


def _status_value(parameter: str, raw: str) -> tuple[int, int]:
    match = _STATUS.fullmatch(raw.lower())
    if not match:
        raise bad(parameter, f"expected an HTTP status like 200, 415 or 4xx, got {_shown(raw)}")
    hundreds = int(match.group(1)) * 100
    if match.group(2) == "xx":
        return hundreds, hundreds + 99
    return int(raw), int(raw)


def filter_values(name: str, raw: str) -> tuple:
    """Typed values of the filter parameter ``name``."""
    values = split_values(name, raw)
    if name in TIME_GRAINS:
        return tuple(time_value(name, v) for v in values)
    if name == "weekday":
        return tuple(_int_value(name, v, 1, 7) for v in values)
    if name == "hour_of_day":
        return tuple(_int_value(name, v, 0, 23) for v in values)
    if name == "status":
        return tuple(_status_value(name, v) for v in values)
    if name in ("cache_hit", "fallback"):
        return tuple(_bool_value(name, v) for v in values)
    if name == "class":
        return _flat(resolve_class(v) for v in values)
    if name == "concept" or name.startswith(CONCEPT_PREFIX):
        return _concepts(name, values)
    if name == "image_format":
        return tuple(v.upper() for v in values)  # Pillow's names: JPEG, PNG, WEBP, GIF
    return values


def _flat(groups: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for group in groups for v in group))


def _concepts(name: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """Concepts are a fixed set (the shipped WordNet paths): a name outside it is a typo."""
    depth = concept_depth(name)
    found = []
    for value in values:
        names = resolve_concept(value, depth)
        if not names:
            where = "" if depth is None else f" at depth {depth}"
            raise bad(
                name,
                f"no concept named {_shown(value)}{where} (give a name like dog, or a wnid)",
            )
        found.append(names)
    return _flat(found)


def parse_moment(parameter: str, raw: str, *, end: bool) -> datetime | None:
    """A naive UTC datetime; a date as ``to`` means the end of that day (exclusive bound).

    ``to=9999-12-31`` is None, no upper bound: the end of that day is past the last moment
    a ``datetime`` can hold (computing it raised OverflowError, reported as "not an ISO
    date"). Any moment whose UTC equivalent falls outside the years 1 to 9999 is refused as
    out of range.
    """
    raw = raw.strip()
    try:
        if _DATE.fullmatch(raw):
            day = date.fromisoformat(raw)
            if end and day == date.max:
                return None
            moment = datetime(day.year, day.month, day.day)
            return moment + timedelta(days=1) if end else moment
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise bad(
            parameter,
            f"expected an ISO date or datetime like 2026-11-25 or 2026-11-25T06:30, "
            f"got {_shown(raw)}",
        ) from exc
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        except OverflowError as exc:
            raise bad(
                parameter,
                f"{_shown(raw)} is out of range: in UTC it falls outside 0001-01-01 to 9999-12-31",
            ) from exc
    return moment


def parse_filters(
    params: Mapping[str, str],
) -> tuple[tuple[tuple[str, tuple], ...], datetime | None, datetime | None]:
    """(filters, from, to) from every filter parameter present in ``params``."""
    filters = []
    for name, raw in params.items():
        if name in FILTER_PARAMS or (
            name.startswith(CONCEPT_PREFIX) and concept_depth(name) is not None
        ):
            filters.append((name, filter_values(name, raw)))
    time_from = parse_moment("from", params["from"], end=False) if "from" in params else None
    time_to = parse_moment("to", params["to"], end=True) if "to" in params else None
    if time_from is not None and time_to is not None and time_from >= time_to:
        raise bad("to", "must be later than from")
    return tuple(filters), time_from, time_to


def check_known(params: Iterable[str], allowed: Iterable[str]) -> None:
    allowed = set(allowed)
    for name in params:
        if name in allowed or (name.startswith(CONCEPT_PREFIX) and "concept" in allowed):
            continue
        raise bad(
            name[:40],
            f"unknown parameter; use {', '.join(sorted(allowed))} or concept:N",
        )


def parse_limit(raw: str | None, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if raw is None:
        return default
    return _int_value("limit", raw.strip(), 1, maximum)


def parse_bool(parameter: str, raw: str | None) -> bool:
    return False if raw is None else _bool_value(parameter, raw.strip())


def parse_cube(params: Mapping[str, str], *, extra: Iterable[str] = ()) -> CubeQuery:
    """The ``CubeQuery`` for cube parameters; ``extra`` names other accepted parameters."""
    check_known(params, (*CUBE_PARAMS, *FILTER_PARAMS, *TIME_PARAMS, *extra))
    group_by: tuple[str, ...] = ()
    if params.get("group_by", "").strip():
        group_by = tuple(
            check_dimension("group_by", n) for n in split_names("group_by", params["group_by"])
        )
        if len(group_by) > MAX_GROUP_BY:
            raise bad("group_by", f"at most {MAX_GROUP_BY} dimensions")
    measures = parse_measures(params.get("measures"))
    pivot = params.get("pivot", "").strip() or None
    rollup = parse_bool("rollup", params.get("rollup"))
    if pivot is not None:
        if pivot not in group_by:
            raise bad("pivot", f"{_shown(pivot)} must be one of the group_by dimensions")
        if rollup:
            raise bad("pivot", "cannot be combined with rollup")
    order = []
    if params.get("order", "").strip():
        allowed = [d for d in group_by if d != pivot] + ([] if pivot else list(measures))
        for item in split_names("order", params["order"]):
            # One sign at most: "--requests" is a typo, not "descending".
            name = item[1:] if item[:1] in ("+", "-") else item
            if name[:1] in ("+", "-"):
                raise bad("order", f"{_shown(item)}: one leading - (descending) at most")
            if name not in allowed:
                raise bad(
                    "order",
                    f"{_shown(name)} is not a requested column; order by one of "
                    f"{', '.join(allowed) or '(none)'}",
                )
            order.append((name, item.startswith("-")))
    filters, time_from, time_to = parse_filters(params)
    return CubeQuery(
        group_by=group_by,
        measures=measures,
        filters=filters,
        time_from=time_from,
        time_to=time_to,
        order=tuple(order),
        limit=parse_limit(params.get("limit")),
        rollup=rollup,
        pivot=pivot,
    )
