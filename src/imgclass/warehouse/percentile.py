"""Exact percentiles of a column, the same on SQLite and PostgreSQL.

Definition (PostgreSQL's ``percentile_cont``, numpy's default "linear" method, Excel's
PERCENTILE.INC): sort the n values v[0] ≤ … ≤ v[n-1]; the p-th percentile (0 ≤ p ≤ 1)
sits at position h = (n-1)·p and is v[⌊h⌋] + (h-⌊h⌋)·(v[⌊h⌋+1] - v[⌊h⌋]). So p50 of
(1, 2, 3, 10) is 2.5, a group of one value gives that value, and NULLs are ignored.

* PostgreSQL: ``percentile_cont(p) WITHIN GROUP (ORDER BY value)``, a native aggregate.
* SQLite has no such aggregate, so ``db.make_engine`` registers ``imgclass_percentile``
  (``PercentileAggregate`` below) on every connection. Measured about 2.4x faster there
  than the ROW_NUMBER()/COUNT() window formulation (bench/analytics_speed.py).
* Ungrouped percentiles (dashboard totals), on both, read the k-th value off an index on
  the column instead: ``ordered_percentile`` (ORDER BY value LIMIT 2 OFFSET k, from
  whichever end is nearer), which walks part of an index instead of sorting every row.

``percentile_cont(value, p)`` is the SQLAlchemy expression for both dialects.
"""

from __future__ import annotations

import math

from sqlalchemy import Float, literal_column
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.functions import FunctionElement

SQLITE_FUNCTION = "imgclass_percentile"


class percentile_cont(FunctionElement):  # named like the SQL function
    """``percentile_cont(value, fraction)``: an aggregate; ``fraction`` is a Python float."""

    type = Float()
    inherit_cache = True

    def __init__(self, value: ColumnElement, fraction: float):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be within [0, 1], got {fraction}")
        # A literal, not a bound parameter: PostgreSQL needs to know its type, and it is
        # always one of our own constants, never request text.
        super().__init__(value, literal_column(repr(float(fraction)), Float))


@compiles(percentile_cont)
def _compile_default(element, compiler, **kw):
    value, fraction = element.clauses.clauses
    return f"{SQLITE_FUNCTION}({compiler.process(value, **kw)}, {compiler.process(fraction, **kw)})"


@compiles(percentile_cont, "postgresql")
def _compile_postgresql(element, compiler, **kw):
    value, fraction = element.clauses.clauses
    return (
        f"percentile_cont({compiler.process(fraction, **kw)}) "
        f"WITHIN GROUP (ORDER BY {compiler.process(value, **kw)})"
    )


def position(n: int, fraction: float) -> tuple[int, float]:
    """(⌊h⌋, h - ⌊h⌋) for h = (n-1)·fraction: the lower index and the interpolation weight."""
    h = (n - 1) * fraction
    low = math.floor(h)
    return low, h - low


def interpolate(ordered: list[float], fraction: float) -> float | None:
    """The percentile of already sorted values (the definition above)."""
    if not ordered:
        return None
    low, weight = position(len(ordered), fraction)
    if weight == 0.0 or low + 1 >= len(ordered):
        return float(ordered[low])
    return ordered[low] + weight * (ordered[low + 1] - ordered[low])


class PercentileAggregate:
    """SQLite aggregate ``imgclass_percentile(value, fraction)``."""

    def __init__(self):
        self.values: list[float] = []
        self.fraction = 0.5

    def step(self, value, fraction):
        if value is not None:
            self.values.append(value)
        self.fraction = fraction

    def finalize(self):
        self.values.sort()
        return interpolate(self.values, self.fraction)


def ordered_percentile(
    conn: Connection, values: Select, column: ColumnElement, n: int, fraction: float
) -> float | None:
    """The percentile of the ``n`` non-NULL rows ``values`` selects, read at offset k.

    ``values`` selects ``column`` with the query's filters. Reading from the nearer end
    keeps p95/p99 cheap: an index on ``column`` turns this into a short index walk.
    """
    if n <= 0:
        return None
    low, weight = position(n, fraction)
    want = 2 if weight > 0.0 and low + 1 < n else 1
    top = n - low - want  # offset of the same rows counted from the largest value
    if low <= top:
        stmt = values.order_by(column.asc()).limit(want).offset(low)
    else:
        stmt = values.order_by(column.desc()).limit(want).offset(top)
    found = sorted(conn.execute(stmt).scalars())
    if not found:
        return None
    return interpolate(found, weight) if len(found) == 2 else float(found[0])
