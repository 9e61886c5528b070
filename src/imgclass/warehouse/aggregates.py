"""Roll-ups of the facts: ``agg_day_class``, ``agg_day_user``, ``agg_day_outcome`` (daily)
and ``agg_hour_outcome`` (hourly).

The Recorder adds every new fact row to them in the same transaction (``add_facts``),
so they are always exactly the facts summed by day and key; ``rebuild`` recomputes
them from the facts (migration 0004 uses it; so can a repair). The cube reads them
instead of the facts when a query only needs what they hold (see ``cube.choose_source``).

Upserts touch their rows in key order, so two PostgreSQL transactions that update the
same rows take the row locks in the same order and cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from sqlalchemy import Integer, String, Table, TextClause, case, func, literal_column, select, text
from sqlalchemy.engine import Connection

from imgclass.warehouse.schema import (
    AGGREGATES,
    agg_day_class,
    agg_day_outcome,
    agg_day_user,
    agg_hour_outcome,
    api_event_fact,
)

OUTCOME = ("model_key", "status_code", "error_code", "cache_hit", "is_fallback")
KEYS = {
    agg_day_class: ("class_key",),
    agg_day_user: ("user_key",),
    agg_day_outcome: OUTCOME,
    agg_hour_outcome: OUTCOME,
}


def time_key(table: Table) -> tuple[str, int]:
    """(time key column, what to divide timestamp_key (YYYYMMDDHHMM) by to get it)."""
    return ("hour_key", 100) if "hour_key" in table.c else ("day_key", 10_000)


ADDITIVE = (
    "events",
    "requests",
    "errors",
    "time_sum",
    "confidence_sum",
    "confidence_count",
    "cache_hits",
    "fallbacks",
)


def _key_value(row: dict, column: str):
    if column == "error_code":
        return row["error_code"] or ""
    if column in ("cache_hit", "is_fallback"):
        return bool(row[column])
    return row[column]


@cache
def _upsert(table_name: str, dialect: str) -> TextClause:
    """INSERT … ON CONFLICT DO UPDATE adding to a row (same syntax on SQLite and PostgreSQL).

    Written once as text from our own table and column names: SQLAlchemy recompiles an
    on_conflict_do_update construct on every execution, which cost ~1 ms per event.
    """
    table = next(t for t in AGGREGATES if t.name == table_name)
    keys = (time_key(table)[0], *KEYS[table])
    columns = [c.name for c in table.columns]
    least, greatest = ("LEAST", "GREATEST") if dialect == "postgresql" else ("min", "max")
    updates = [f"{c} = {table_name}.{c} + excluded.{c}" for c in ADDITIVE]
    updates += [
        f"time_min = {least}({table_name}.time_min, excluded.time_min)",
        f"time_max = {greatest}({table_name}.time_max, excluded.time_max)",
    ]
    return text(
        f"INSERT INTO {table_name} ({', '.join(columns)}) "
        f"VALUES ({', '.join(':' + c for c in columns)}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(updates)}"
    )


def add_facts(conn: Connection, rows: Sequence[dict]) -> None:
    """Add fact rows (as inserted into api_event_fact) to every aggregate."""
    for table in AGGREGATES:
        keys = KEYS[table]
        time_column, scale = time_key(table)
        sums: dict[tuple, dict] = {}
        for row in rows:
            key = (row["timestamp_key"] // scale, *(_key_value(row, k) for k in keys))
            count = row["request_count"]
            confidence = row["confidence"]
            new = {
                "events": 1,
                "requests": count,
                "errors": count if row["status_code"] >= 400 else 0,
                "time_sum": row["time_taken"],
                "time_min": row["time_taken"],
                "time_max": row["time_taken"],
                "confidence_sum": confidence or 0.0,
                "confidence_count": 0 if confidence is None else 1,
                "cache_hits": int(bool(row["cache_hit"])),
                "fallbacks": int(bool(row["is_fallback"])),
            }
            old = sums.get(key)
            if old is None:
                sums[key] = new
                continue
            for column in ADDITIVE:
                old[column] += new[column]
            old["time_min"] = min(old["time_min"], new["time_min"])
            old["time_max"] = max(old["time_max"], new["time_max"])
        conn.execute(
            _upsert(table.name, conn.dialect.name),
            [dict(zip((time_column, *keys), key, strict=True)) | sums[key] for key in sorted(sums)],
        )


def rebuild(conn: Connection, tables: Sequence[Table] = AGGREGATES) -> None:
    """Recompute aggregates from the facts."""
    f = api_event_fact
    one, zero = literal_column("1", Integer), literal_column("0", Integer)
    for table in tables:
        time_column, scale = time_key(table)
        day = f.c.timestamp_key // literal_column(str(scale), Integer)
        keys = [
            func.coalesce(f.c.error_code, literal_column("''", String))
            if k == "error_code"
            else f.c[k]
            for k in KEYS[table]
        ]
        measures = [
            func.count(),
            func.sum(f.c.request_count),
            func.sum(case((f.c.status_code >= 400, f.c.request_count), else_=zero)),
            func.sum(f.c.time_taken),
            func.min(f.c.time_taken),
            func.max(f.c.time_taken),
            func.coalesce(func.sum(f.c.confidence), literal_column("0.0")),
            func.count(f.c.confidence),
            func.sum(case((f.c.cache_hit, one), else_=zero)),
            func.sum(case((f.c.is_fallback, one), else_=zero)),
        ]
        query = select(day, *keys, *measures).group_by(day, *keys)
        columns = [
            time_column,
            *KEYS[table],
            "events",
            "requests",
            "errors",
            "time_sum",
            "time_min",
            "time_max",
            "confidence_sum",
            "confidence_count",
            "cache_hits",
            "fallbacks",
        ]
        conn.execute(table.delete())
        conn.execute(table.insert().from_select(columns, query))
