"""Daily roll-ups of the facts (``agg_day_class``, ``agg_day_user``, ``agg_day_outcome``).

The Recorder adds every new fact row to them in the same transaction (``add_facts``),
so they are always exactly the facts summed by day and key; ``rebuild`` recomputes
them from the facts (migration 0004 uses it; so can a repair). The cube reads them
instead of the facts when a query only needs what they hold (see ``cube.choose_source``).

Upserts touch their rows in key order, so two PostgreSQL transactions that update the
same rows take the row locks in the same order and cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Integer, String, case, func, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from imgclass.warehouse.schema import (
    DAILY_AGGREGATES,
    agg_day_class,
    agg_day_outcome,
    agg_day_user,
    api_event_fact,
)

KEYS = {
    agg_day_class: ("class_key",),
    agg_day_user: ("user_key",),
    agg_day_outcome: ("model_key", "status_code", "error_code", "cache_hit", "is_fallback"),
}
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


def add_facts(conn: Connection, rows: Sequence[dict]) -> None:
    """Add fact rows (as inserted into api_event_fact) to every daily aggregate."""
    dialect = conn.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    least = func.least if dialect == "postgresql" else func.min  # min(a, b) is scalar in SQLite
    greatest = func.greatest if dialect == "postgresql" else func.max
    for table in DAILY_AGGREGATES:
        keys = KEYS[table]
        sums: dict[tuple, dict] = {}
        for row in rows:
            key = (row["timestamp_key"] // 10_000, *(_key_value(row, k) for k in keys))
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
        stmt = insert(table)
        update = {c: table.c[c] + stmt.excluded[c] for c in ADDITIVE}
        update["time_min"] = least(table.c.time_min, stmt.excluded.time_min)
        update["time_max"] = greatest(table.c.time_max, stmt.excluded.time_max)
        stmt = stmt.on_conflict_do_update(index_elements=["day_key", *keys], set_=update)
        conn.execute(
            stmt,
            [dict(zip(("day_key", *keys), key, strict=True)) | sums[key] for key in sorted(sums)],
        )


def rebuild(conn: Connection) -> None:
    """Recompute every daily aggregate from the facts."""
    f = api_event_fact
    day = f.c.timestamp_key // literal_column("10000", Integer)
    one, zero = literal_column("1", Integer), literal_column("0", Integer)
    for table in DAILY_AGGREGATES:
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
            "day_key",
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
