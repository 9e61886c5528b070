"""The cube against plain-Python answers on random events, on SQLite and on PostgreSQL."""

from __future__ import annotations

import csv
import random
import sqlite3

import numpy as np
import pytest
from sqlalchemy import func, select

from imgclass.errors import BadRequest
from imgclass.warehouse.cube import MEASURES, Cube, csv_lines, result_table
from imgclass.warehouse.cube_params import parse_cube
from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import upgrade
from imgclass.warehouse.percentile import (
    SQLITE_FUNCTION,
    PercentileAggregate,
    ordered_percentile,
    percentile_cont,
)
from imgclass.warehouse.schema import api_event_fact
from tests.support.postgres import temporary_database
from tests.warehouse.cube_data import DIMENSION_VALUES, expected, make_events, store


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(request, tmp_path_factory):
    rows = make_events()
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('cube') / 'w.db'}")
        upgrade(engine)
        store(engine, rows)
        yield Cube(engine), rows
        engine.dispose()
        return
    with temporary_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        store(engine, rows)
        yield Cube(engine), rows
        engine.dispose()


def by_key(result, dims, measures) -> dict[tuple, dict]:
    return {tuple(r[d] for d in dims): {m: r[m] for m in measures} for r in result.rows}


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, values in want.items():
        for name, value in values.items():
            if value is None or isinstance(value, int):
                assert got[key][name] == value, (key, name)
            else:
                assert got[key][name] == pytest.approx(value, rel=1e-9), (key, name)


@pytest.mark.parametrize("dimension", list(DIMENSION_VALUES))
def test_every_dimension_with_every_measure(seeded, dimension):
    cube, rows = seeded
    query = parse_cube({"group_by": dimension, "measures": ",".join(MEASURES)})
    result = cube.run(query)
    assert not result.truncated
    assert_same(by_key(result, [dimension], MEASURES), expected(rows, [dimension], list(MEASURES)))


def test_two_dimensions_and_totals(seeded):
    cube, rows = seeded
    names = ["requests", "p50_time_ms", "p99_time_ms", "avg_time_ms", "distinct_users"]
    query = parse_cube(
        {"group_by": "day,class", "measures": ",".join(names), "rollup": "true", "limit": "5000"}
    )
    result = cube.run(query)
    assert_same(by_key(result, ["day", "class"], names), expected(rows, ["day", "class"], names))
    subtotals = {(r["day"],): {m: r[m] for m in names} for r in result.subtotals}
    assert_same(subtotals, expected(rows, ["day"], names))
    assert_same({(): result.totals}, expected(rows, [], names))


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({"user": "alice,carol"}, lambda r: r.event.requester.username in ("alice", "carol")),
        (
            {"class": "tabby,Persian cat"},
            lambda r: r.event.predicted is not None and r.event.predicted.class_id in (281, 283),
        ),
        (
            {"class": "n02123045"},
            lambda r: r.event.predicted is not None and r.event.predicted.class_id == 281,
        ),
        (
            {"concept": "dog"},
            lambda r: (
                r.event.predicted is not None and r.event.predicted.class_id in (207, 208, 250)
            ),
        ),
        (
            {"concept": "cat,bird"},
            lambda r: (
                r.event.predicted is not None and r.event.predicted.class_id in (281, 283, 285, 134)
            ),
        ),
        (
            {"concept:0": "artifact"},
            lambda r: r.event.predicted is not None and r.event.predicted.class_id == 517,
        ),
        ({"ip": "10.0.0.2"}, lambda r: r.event.requester.ip_address == "10.0.0.2"),
        (
            {"user_agent": '"Mozilla/5.0 (X11, Linux x86_64)",Wget/1.21'},
            lambda r: r.event.requester.user_agent.startswith(("Mozilla", "Wget")),
        ),
        ({"model": "efficientnet-lite0@0.1.0+int8"}, lambda r: r.event.is_fallback),
        ({"model": "efficientnet-lite0"}, lambda r: r.event.model is not None),
        ({"status": "4xx"}, lambda r: 400 <= r.event.status_code < 500),
        ({"status": "200,503"}, lambda r: r.event.status_code in (200, 503)),
        ({"error_code": "corrupt_image"}, lambda r: r.event.error_code == "corrupt_image"),
        (
            {"image_format": "PNG"},
            lambda r: r.event.image is not None and r.event.image.format == "PNG",
        ),
        ({"cache_hit": "true"}, lambda r: r.event.cache_hit),
        ({"fallback": "no"}, lambda r: not r.event.is_fallback),
        (
            {"minute": "2026-12-29T22:05,2026-12-29T22:06"},
            lambda r: (
                r.event.event_time.strftime("%H:%M") in ("22:05", "22:06")
                and r.event.event_time.day == 29
            ),
        ),
        ({"hour": "2026-12-29T23"}, lambda r: r.event.event_time.strftime("%d %H") == "29 23"),
        ({"day": "2026-12-31,2027-01-02"}, lambda r: r.event.event_time.day in (31, 2)),
        ({"week": "2026-W53"}, lambda r: r.event.event_time.isocalendar().week == 53),
        ({"month": "2027-01"}, lambda r: r.event.event_time.month == 1),
        ({"quarter": "2026-Q4"}, lambda r: r.event.event_time.year == 2026),
        ({"year": "2027"}, lambda r: r.event.event_time.year == 2027),
        ({"weekday": "3,4"}, lambda r: r.event.event_time.isoweekday() in (3, 4)),
        ({"hour_of_day": "22"}, lambda r: r.event.event_time.hour == 22),
        (
            {"from": "2026-12-31", "to": "2027-01-02"},
            lambda r: "2026-12-31" <= r.event.event_time.date().isoformat() <= "2027-01-02",
        ),
        (
            {"from": "2026-12-29T22:30:30", "to": "2026-12-29T23:00:15+00:00"},
            lambda r: "2026-12-29 22:30:30" <= str(r.event.event_time) < "2026-12-29 23:00:15",
        ),
        (
            {"from": "2026-12-30T00:30+01:00"},
            lambda r: str(r.event.event_time) >= "2026-12-29 23:30",
        ),
        (
            {"user": "alice", "cache_hit": "false", "class": "tabby,goldfish"},
            lambda r: (
                r.event.requester.username == "alice"
                and not r.event.cache_hit
                and r.event.predicted is not None
                and r.event.predicted.class_id in (281, 1)
            ),
        ),
    ],
)
def test_filters_select_the_same_rows_as_python(seeded, params, keep):
    cube, rows = seeded
    names = ["requests", "errors", "p95_time_ms", "avg_confidence"]
    result = cube.run(parse_cube({"group_by": "user", "measures": ",".join(names), **params}))
    want = expected(rows, ["user"], names, keep)
    assert want, "the filter should match some rows"
    assert_same(by_key(result, ["user"], names), want)


def test_unknown_filter_values_give_empty_results(seeded):
    # Users, IPs, classes… are open sets: a value nobody was recorded with has no events.
    cube, _ = seeded
    for params in (
        {"user": "nobody"},
        {"class": "unicorn"},
        {"user_agent": "x' OR '1'='1"},
        {"image_format": "TIFF"},
    ):
        assert cube.run(parse_cube({"group_by": "day", **params})).rows == []
        assert cube.totals(parse_cube(params)) == {"requests": 0}


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"concept": "unicorn"}, "concept"),
        ({"concept": "dog,x' OR '1'='1"}, "concept"),
        ({"concept:3": "unicorn"}, "concept:3"),
        ({"concept:3": "dog"}, "concept:3"),  # a concept, but not at depth 3
    ],
)
def test_unknown_concepts_are_refused(params, parameter):
    # Concepts are the fixed WordNet tree shipped with the code: a name outside it is a typo.
    with pytest.raises(BadRequest) as caught:
        parse_cube(params)
    assert caught.value.message.startswith(f"{parameter}: no concept named")


@pytest.mark.parametrize(
    ("given", "same_as"),
    [
        ({"concept": "Dog"}, {"concept": "dog"}),
        ({"concept": "ANIMAL,Cat"}, {"concept": "animal,cat"}),
        ({"concept": "N02084071"}, {"concept": "dog"}),
        ({"concept:3": "Mammal"}, {"concept:3": "mammal"}),
        ({"class": "TABBY,persian cat"}, {"class": "tabby,Persian_cat"}),
        ({"class": "N02123045"}, {"class": "tabby"}),
        ({"image_format": "png"}, {"image_format": "PNG"}),
        ({"image_format": "Jpeg"}, {"image_format": "JPEG"}),
    ],
)
def test_names_are_matched_whatever_their_case(seeded, given, same_as):
    cube, _ = seeded
    want = cube.run(parse_cube({"group_by": "user", **same_as})).rows
    assert want, "the filter should match some rows"
    assert cube.run(parse_cube({"group_by": "user", **given})).rows == want


def test_a_name_that_differs_only_in_case_keeps_its_spelling():
    # Cardigan (the corgi) and cardigan (the sweater): the exact spelling picks one.
    assert parse_cube({"class": "Cardigan"}).filters == (("class", ("Cardigan",)),)
    assert parse_cube({"concept": "cardigan"}).filters == (("concept", ("cardigan",)),)
    assert parse_cube({"class": "CARDIGAN"}).filters == (("class", ("Cardigan", "cardigan")),)


def test_a_concept_below_a_class_depth_is_the_class(seeded):
    # pizza sits at depth 5; group_by=concept:8 shows it as pizza, and the filter agrees.
    cube, rows = seeded
    grouped = cube.run(parse_cube({"group_by": "concept:8", "concept:8": "pizza"})).rows
    pizzas = sum(1 for r in rows if r.event.predicted and r.event.predicted.class_id == 963)
    assert pizzas and grouped == [{"concept:8": "pizza", "requests": pizzas}]


def test_order_limit_and_truncation(seeded):
    cube, rows = seeded
    want = expected(rows, ["class"], ["requests"])
    ranked = sorted(want.items(), key=lambda kv: (-kv[1]["requests"], kv[0]))
    result = cube.run(parse_cube({"group_by": "class", "order": "-requests", "limit": "3"}))
    assert [(r["class"],) for r in result.rows] == [k for k, _ in ranked[:3]]
    assert result.truncated
    everything = cube.run(parse_cube({"group_by": "class", "order": "class", "limit": "100"}))
    assert [r["class"] for r in everything.rows] == sorted(k[0] for k in want)
    assert not everything.truncated
    latest = cube.run(parse_cube({"group_by": "day", "order": "-day", "limit": "1"}))
    assert latest.rows[0]["day"] == max(k[0] for k in expected(rows, ["day"], ["requests"]))


def ranked(want: dict[tuple, dict]) -> list[tuple]:
    """Keys by requests, most first, ties by the key (the cube's order=-requests)."""
    return [k for k, _ in sorted(want.items(), key=lambda kv: (-kv[1]["requests"], kv[0]))]


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_rollup_subtotals_follow_the_rows_that_limit_keeps(seeded, limit):
    cube, rows = seeded
    dims = ["year", "user", "class"]
    result = cube.run(
        parse_cube(
            {"group_by": ",".join(dims), "order": "-requests", "limit": str(limit), "rollup": "1"}
        )
    )
    shown = ranked(expected(rows, dims, ["requests"]))[:limit]
    assert [tuple(r[d] for d in dims) for r in result.rows] == shown
    assert result.truncated
    subtotals = []
    for level in (2, 1):
        want = expected(rows, dims[:level], ["requests"])
        groups = {key[:level] for key in shown}
        # Each shown group's subtotal over all its rows, in the order of the query.
        subtotals += [
            dict(zip(dims[:level], key, strict=True)) | want[key]
            for key in ranked(want)
            if key in groups
        ]
    assert result.subtotals == subtotals
    assert result.totals == {"requests": len(rows)}


def test_pivot_turns_a_dimension_into_columns(seeded):
    cube, rows = seeded
    result = cube.run(
        parse_cube({"group_by": "day,cache_hit", "pivot": "cache_hit", "measures": "requests"})
    )
    assert result.columns == ["day", "cache_hit=false", "cache_hit=true"]
    want = expected(rows, ["day", "cache_hit"], ["requests"])
    for row in result.rows:
        for flag in (False, True):
            cell = want.get((row["day"], flag))
            assert row[f"cache_hit={str(flag).lower()}"] == (cell["requests"] if cell else None)
    two = cube.run(
        parse_cube(
            {"group_by": "fallback,user", "pivot": "fallback", "measures": "requests,errors"}
        )
    )
    assert two.columns == [
        "user",
        "fallback=false|requests",
        "fallback=false|errors",
        "fallback=true|requests",
        "fallback=true|errors",
    ]
    codes = cube.run(parse_cube({"group_by": "year,error_code", "pivot": "error_code"}))
    assert codes.columns[1] == "error_code=corrupt_image"
    assert codes.columns[-1] == "error_code=null"  # the successful requests


def test_pivoting_the_only_dimension_gives_a_row_per_measure(seeded):
    cube, rows = seeded
    result = cube.run(
        parse_cube({"group_by": "cache_hit", "pivot": "cache_hit", "measures": "requests,errors"})
    )
    want = expected(rows, ["cache_hit"], ["requests", "errors"])
    assert result.columns == ["measure", "cache_hit=false", "cache_hit=true"]
    assert result.rows == [
        {"measure": m, **{f"cache_hit={str(k[0]).lower()}": v[m] for k, v in want.items()}}
        for m in ("requests", "errors")
    ]


def test_csv_has_a_header_and_marks_rollup_rows(seeded):
    cube, rows = seeded
    query = parse_cube(
        {"group_by": "year,fallback", "measures": "requests,avg_time_ms", "rollup": "1"}
    )
    table = list(csv.reader(csv_lines(*result_table(cube.run(query)))))
    assert table[0] == ["year", "fallback", "requests", "avg_time_ms", "_level"]
    # Rolled-up cells are empty; _level counts the dimensions a row is grouped by.
    assert table[-1][:3] + table[-1][4:] == ["", "", str(len(rows)), "0"]
    assert any(row[:2] == ["2026", ""] and row[-1] == "1" for row in table)
    assert any(row[:2] == ["2027", "true"] and row[-1] == "2" for row in table)
    assert "(all)" not in {cell for row in table for cell in row}
    columns, streamed, truncated = cube.stream(parse_cube({"group_by": "user", "order": "user"}))
    assert columns == ["user", "requests"] and not truncated
    assert [r[0] for r in streamed] == ["alice", "anonymous", "bob", "carol"]


@pytest.mark.parametrize(("limit", "truncated"), [(3, True), (4, False), (5, False)])
def test_a_stream_says_whether_limit_cut_rows_before_sending_them(seeded, limit, truncated):
    cube, _ = seeded
    query = parse_cube({"group_by": "user", "order": "-user", "limit": str(limit)})
    _, streamed, cut = cube.stream(query)
    assert cut is truncated  # known before the first row is read
    assert [r[0] for r in streamed] == ["carol", "bob", "anonymous", "alice"][:limit]
    empty = parse_cube({"group_by": "user", "user": "nobody", "limit": "1"})
    _, nothing, cut = cube.stream(empty)
    assert list(nothing) == [] and cut is False


def test_csv_neutralises_formulas():
    rows = [['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\tx", "a=b", -3, 1.5, None]]
    table = list(
        csv.reader(csv_lines(["user", "b", "c", "d", "e", "f", "g", "h", "i"], iter(rows)))
    )
    assert table[1] == [
        '\'=HYPERLINK("http://x")',
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "'\tx",
        "a=b",
        "-3",  # numbers are numbers
        "1.5",
        "",
    ]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"group_by": "day,colour"}, "group_by"),
        ({"group_by": "concept:99"}, "group_by"),
        ({"group_by": "day,concept:x"}, "group_by"),
        ({"concept:99": "dog"}, "concept:99"),
        ({"group_by": "day,day"}, "group_by"),
        ({"measures": "requests,speed"}, "measures"),
        ({"colour": "red"}, "colour"),
        ({"from": "2026-13-01"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"from": "2026-12-02", "to": "2026-12-01"}, "to"),
        ({"day": "2026-02-30"}, "day"),
        ({"week": "2026-W54"}, "week"),
        ({"status": "2x"}, "status"),
        ({"weekday": "8"}, "weekday"),
        ({"cache_hit": "maybe"}, "cache_hit"),
        ({"user": ""}, "user"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"limit": "100000000000000000000"}, "limit"),
        ({"order": "-errors"}, "order"),
        ({"order": "--requests"}, "order"),
        ({"order": "+-requests"}, "order"),
        ({"group_by": "day", "order": "class"}, "order"),
        ({"group_by": "day", "pivot": "class"}, "pivot"),
        ({"group_by": "day,class", "pivot": "class", "rollup": "true"}, "pivot"),
        ({"user": '"unterminated'}, "user"),
    ],
)
def test_bad_parameters_are_named(params, parameter):
    with pytest.raises(BadRequest) as caught:
        parse_cube(params)
    assert caught.value.message.startswith(f"{parameter}:")
    assert caught.value.status == 400


# -- the percentile definition on its own -----------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_percentiles_match_numpy_on_small_and_tied_samples(seed, tmp_path):
    rng = random.Random(seed)
    db = sqlite3.connect(tmp_path / "p.db")
    db.create_aggregate(SQLITE_FUNCTION, 2, PercentileAggregate)
    db.execute("CREATE TABLE t (g INTEGER, v REAL)")
    samples = {}
    for group in range(12):
        n = [1, 2, 3, rng.randint(4, 60)][group % 4]
        samples[group] = [
            float(rng.choice([1, 2, 2, 3, 10])) if group % 3 == 0 else rng.uniform(0, 100)
            for _ in range(n)
        ]
        db.executemany("INSERT INTO t VALUES (?, ?)", [(group, v) for v in samples[group]])
    for p in (0.0, 0.5, 0.95, 0.99, 1.0):
        got = dict(db.execute(f"SELECT g, {SQLITE_FUNCTION}(v, ?) FROM t GROUP BY g", (p,)))
        for group, values in samples.items():
            assert got[group] == pytest.approx(np.percentile(values, p * 100), rel=1e-12)


def test_ordered_percentile_reads_the_same_values(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    upgrade(engine)
    rows = make_events(60, seed=3)
    store(engine, rows)
    times = [r.event.time_taken_ms for r in rows]
    values = select(api_event_fact.c.time_taken)
    with engine.connect() as conn:
        for p in (0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 1.0):
            got = ordered_percentile(conn, values, api_event_fact.c.time_taken, len(times), p)
            assert got == pytest.approx(np.percentile(times, p * 100), rel=1e-12)
            agg = conn.execute(select(percentile_cont(api_event_fact.c.time_taken, p))).scalar_one()
            assert agg == pytest.approx(got, rel=1e-12)
        assert ordered_percentile(conn, values, api_event_fact.c.time_taken, 0, 0.5) is None
        assert conn.execute(select(func.count()).select_from(api_event_fact)).scalar_one() == 60


# -- daily aggregates ------------------------------------------------------------------

ADDITIVE = "requests,errors,error_rate,avg_time_ms,min_time_ms,max_time_ms,avg_confidence"
AGGREGATE_QUERIES = [
    ({"group_by": "day,class"}, "agg_day_class"),
    ({"group_by": "month,concept:1", "concept": "animal"}, "agg_day_class"),
    ({"group_by": "quarter,user", "measures": ADDITIVE + ",distinct_users"}, "agg_day_user"),
    ({"group_by": "year,ip,user_agent", "user": "alice"}, "agg_day_user"),
    ({"group_by": "day,model,fallback", "status": "2xx"}, "agg_day_outcome"),
    (
        {"group_by": "error_code,cache_hit", "from": "2026-12-30", "to": "2027-01-03"},
        "agg_day_outcome",
    ),
    ({"group_by": "day", "day": "2026-12-29,2027-01-01"}, "agg_day_outcome"),
    ({"group_by": "class", "from": "2026-12-30T00:00:01"}, "api_event_fact"),  # not whole days
    ({"group_by": "class,user"}, "api_event_fact"),  # no aggregate has both
    ({"group_by": "hour,status"}, "agg_hour_outcome"),
    ({"group_by": "hour_of_day,fallback", "from": "2026-12-30T05:00"}, "agg_hour_outcome"),
    ({"group_by": "day", "hour": "2026-12-29T23,2027-01-01T02"}, "agg_hour_outcome"),
    ({"group_by": "hour", "to": "2026-12-30T05:30"}, "api_event_fact"),  # not whole hours
    ({"group_by": "minute"}, "api_event_fact"),
]


@pytest.mark.parametrize(("params", "table"), AGGREGATE_QUERIES)
def test_daily_aggregates_answer_exactly_what_the_facts_do(seeded, params, table):
    from imgclass.warehouse.cube import choose_source

    cube, _ = seeded
    query = parse_cube({"measures": ADDITIVE, "limit": "5000", "rollup": "true", **params})
    assert choose_source(query, query.group_by).table.name == table
    from_facts = Cube(cube.engine, aggregates=False).run(query)
    from_aggregates = cube.run(query)
    dims = list(query.group_by)
    assert_same(
        by_key(from_aggregates, dims, query.measures), by_key(from_facts, dims, query.measures)
    )
    assert_same({(): from_aggregates.totals}, {(): from_facts.totals})


def test_aggregates_rebuilt_from_facts_equal_the_recorded_ones(seeded):
    from imgclass.warehouse.aggregates import rebuild
    from imgclass.warehouse.schema import AGGREGATES

    cube, _ = seeded
    with cube.engine.connect() as conn:
        kept = {t.name: sorted(map(tuple, conn.execute(select(t)))) for t in AGGREGATES}
        conn.rollback()
        with conn.begin() as transaction:
            rebuild(conn)
            rebuilt = {t.name: sorted(map(tuple, conn.execute(select(t)))) for t in AGGREGATES}
            transaction.rollback()  # leave the shared warehouse as it was
    for name, rows in kept.items():
        assert len(rows) == len(rebuilt[name]) > 0
        for a, b in zip(rows, rebuilt[name], strict=True):
            assert [x if isinstance(x, float) else pytest.approx(x) for x in a] == [
                pytest.approx(x, rel=1e-9) if isinstance(x, float) else x for x in b
            ]
