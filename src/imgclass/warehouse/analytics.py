"""Dashboard shortcuts over the cube: summary, time series, latest events, concept drill-down.

Each takes the request's parameters as plain strings (``cube_params`` validates them)
and returns JSON-ready dicts; the HTTP layer only checks the caller and serialises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date, timedelta

from sqlalchemy import Engine, select

from imgclass.warehouse.concepts import imagenet_concepts, resolve_concept
from imgclass.warehouse.cube import Cube, CubeQuery, where_clauses
from imgclass.warehouse.cube_params import (
    FILTER_PARAMS,
    TIME_PARAMS,
    bad,
    check_known,
    parse_filters,
    parse_limit,
    parse_measures,
)
from imgclass.warehouse.schema import (
    NONE_KEY,
    api_event_fact,
    class_dim,
    concept_dim,
    image_dim,
    model_dim,
    user_dim,
)

SUMMARY_TOTALS = (
    "requests",
    "errors",
    "error_rate",
    "avg_time_ms",
    "p50_time_ms",
    "p95_time_ms",
    "p99_time_ms",
    "distinct_users",
    "avg_confidence",
)
TOP = 10
TIMESERIES_GRAINS = ("minute", "hour", "day", "week", "month")
MAX_BUCKETS = 10_000
EVENTS_DEFAULT = 50
EVENTS_MAX = 500
FAILURE = ("status", ((400, 599),))

f = api_event_fact


def _base(params: Mapping[str, str], extra: tuple[str, ...] = ()) -> CubeQuery:
    check_known(params, (*FILTER_PARAMS, *TIME_PARAMS, *extra))
    filters, time_from, time_to = parse_filters(params)
    return CubeQuery(filters=filters, time_from=time_from, time_to=time_to)


def summary(engine: Engine, params: Mapping[str, str], today: date) -> dict:
    """Totals over the filters; today and yesterday (UTC, same filters but not from/to);
    top classes and users; errors by code; which model (and fallback) answered."""
    base = _base(params)
    cube = Cube(engine)

    def rows(group_by, *, extra=(), limit=TOP, measures=("requests",), skip_none=None):
        query = replace(
            base,
            group_by=group_by,
            measures=measures,
            filters=base.filters + tuple(extra),
            order=(("requests", True),),
            limit=limit + 1 if skip_none else limit,
        )
        found = cube.run(query).rows
        if skip_none:
            # Failed requests have class and model "none" (and only they do): dropping
            # that row is a status filter the aggregates can answer.
            found = [r for r in found if r[skip_none] != "none"][:limit]
        return found

    keys = {day: int(day.strftime("%Y%m%d")) for day in (today, today - timedelta(days=1))}
    days = {
        r["day"]: r
        for r in cube.run(
            CubeQuery(
                group_by=("day",),
                measures=("requests", "errors"),
                filters=(*base.filters, ("day", tuple(keys.values()))),
            )
        ).rows
    }

    def day(moment: date) -> dict:
        found = days.get(moment.isoformat(), {})
        return {"requests": found.get("requests", 0), "errors": found.get("errors", 0)}

    return {
        "totals": cube.totals(replace(base, measures=SUMMARY_TOTALS)),
        "today": day(today),
        "yesterday": day(today - timedelta(days=1)),
        "top_classes": rows(("class",), skip_none="class"),
        "top_users": rows(("user",)),
        "errors_by_code": rows(("error_code",), extra=(FAILURE,), limit=100),
        "models": rows(("model", "fallback"), limit=100, skip_none="model"),
    }


def timeseries(engine: Engine, params: Mapping[str, str]) -> dict:
    """One row per non-empty time bucket (empty buckets are left out), oldest first."""
    base = _base(params, ("grain", "measures"))
    grain = params.get("grain", "day").strip()
    if grain not in TIMESERIES_GRAINS:
        raise bad("grain", f"expected one of {', '.join(TIMESERIES_GRAINS)}, got {grain[:40]!r}")
    measures = parse_measures(params.get("measures"))
    result = Cube(engine).run(
        replace(base, group_by=(grain,), measures=measures, limit=MAX_BUCKETS)
    )
    if result.truncated:
        raise bad(
            "grain",
            f"more than {MAX_BUCKETS:,} {grain} buckets; narrow from/to or use a coarser grain",
        )
    return {
        "grain": grain,
        "measures": list(measures),
        "rows": [{"time": r[grain], **{m: r[m] for m in measures}} for r in result.rows],
    }


def latest_events(engine: Engine, params: Mapping[str, str]) -> dict:
    """The most recent events matching the filters, newest first."""
    base = _base(params, ("limit",))
    limit = parse_limit(params.get("limit"), EVENTS_DEFAULT, EVENTS_MAX)
    stmt = (
        select(
            f.c.event_time,
            f.c.request_id,
            user_dim.c.username,
            user_dim.c.ip_address,
            class_dim.c.label,
            f.c.confidence,
            f.c.time_taken,
            f.c.status_code,
            f.c.error_code,
            f.c.model_key,
            model_dim.c.model_name,
            model_dim.c.model_version,
            f.c.cache_hit,
            f.c.is_fallback,
            f.c.image_key,
            image_dim.c.image_filename,
        )
        .select_from(
            f.join(user_dim, user_dim.c.user_key == f.c.user_key)
            .join(class_dim, class_dim.c.class_key == f.c.class_key)
            .join(model_dim, model_dim.c.model_key == f.c.model_key)
            .join(image_dim, image_dim.c.image_key == f.c.image_key)
        )
        .where(*where_clauses(base))
        # (timestamp_key, event_id) is the order of the timestamp_key index: no sort.
        .order_by(f.c.timestamp_key.desc(), f.c.event_id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        found = conn.execute(stmt).all()
    return {
        "rows": [
            {
                "event_time": r.event_time.isoformat(timespec="milliseconds"),
                "request_id": r.request_id,
                "user": r.username,
                "ip": r.ip_address,
                "class": r.label,
                "confidence": r.confidence,
                "time_ms": r.time_taken,
                "status": r.status_code,
                "error_code": r.error_code,
                "model": "none" if r.model_key == NONE_KEY else f"{r.model_name}@{r.model_version}",
                "cache_hit": bool(r.cache_hit),
                "fallback": bool(r.is_fallback),
                "filename": None if r.image_key == NONE_KEY else r.image_filename,
            }
            for r in found
        ]
    }


def _find_concept(engine: Engine, raw: str):
    wanted = resolve_concept(raw)  # case aside, as the concept filters take it
    found = []
    if wanted:
        with engine.connect() as conn:
            found = conn.execute(
                select(concept_dim).where(
                    concept_dim.c.wnid.in_(wanted) | concept_dim.c.name.in_(wanted)
                )
            ).all()
    if not found:
        raise bad("parent", f"no concept named {raw[:40]!r} (give a name like dog, or a wnid)")
    if len(found) > 1:
        ids = ", ".join(f"{r.wnid} (depth {r.depth})" for r in found)
        raise bad("parent", f"{raw[:40]!r} names {len(found)} concepts: {ids}; give the wnid")
    return found[0]


def concept_children(engine: Engine, params: Mapping[str, str]) -> dict:
    """A concept, its path from depth 0, and its children with their request counts.

    Without ``parent``: the top concepts (depth 0). A child that is itself an ImageNet
    class carries its class label, for switching to a ``class`` filter.
    """
    base = _base(params, ("parent",))
    parent = _find_concept(engine, params["parent"]) if params.get("parent") else None
    depth = 0 if parent is None else parent.depth + 1
    with engine.connect() as conn:
        path = []
        key = parent.concept_key if parent is not None else None
        while key is not None:
            node = conn.execute(select(concept_dim).where(concept_dim.c.concept_key == key)).one()
            path.insert(0, {"wnid": node.wnid, "name": node.name, "depth": node.depth})
            key = node.parent_key
        children = conn.execute(
            select(concept_dim)
            .where(
                concept_dim.c.parent_key == parent.concept_key
                if parent is not None
                else concept_dim.c.depth == 0
            )
            .order_by(concept_dim.c.name)
        ).all()
    counts: dict[str, int] = {}
    if children:
        # Through the cube, so that whole-day queries read agg_day_class, not every fact.
        dimension = f"concept:{depth}"
        under = (("concept", (parent.wnid,)),) if parent is not None else ()
        query = replace(
            base,
            group_by=(dimension,),
            measures=("requests",),
            filters=base.filters + under,
            limit=len(children) + 1000,
        )
        counts = {row[dimension]: row["requests"] for row in Cube(engine).run(query).rows}
    labels = {
        path[-1].wnid: imagenet_concepts().labels[cid]
        for cid, path in imagenet_concepts().paths.items()
    }
    return {
        "concept": path[-1] if path else None,
        "path": path,
        "children": sorted(
            (
                {
                    "wnid": c.wnid,
                    "name": c.name,
                    "depth": c.depth,
                    "requests": counts.get(c.name, 0),
                    "class": labels.get(c.wnid),
                }
                for c in children
            ),
            key=lambda c: (-c["requests"], c["name"]),
        ),
    }
