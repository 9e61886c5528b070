"""/api/v1/analytics: admin only, the answers users see, and hostile parameters."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from sqlalchemy import func, inspect, select

from imgclass.app import services
from imgclass.warehouse.recorder import Event, Recorder, Requester, utc_now
from imgclass.warehouse.schema import api_event_fact, class_dim, user_dim
from tests.warehouse.cube_data import expected, make_events, store

API = "/api/v1/analytics"


@pytest.fixture
def seeded(app):
    rows = make_events(200, seed=11)
    store(services(app).engine, rows)
    return rows


def get(client, key, path, **params):
    return client.get(
        f"{API}/{path}", query_string=params, headers={"Authorization": f"Bearer {key}"}
    )


@pytest.mark.parametrize("path", ["cube", "summary", "timeseries", "events", "concepts"])
def test_admin_only(app, client, admin_key, path):
    assert client.get(f"{API}/{path}").status_code == 401
    _, user_key = services(app).users.add("dora")
    refused = get(client, user_key, path)
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "forbidden"
    assert get(client, admin_key, path).status_code == 200


def test_cube_json(client, admin_key, seeded):
    resp = get(
        client,
        admin_key,
        "cube",
        group_by="day,class",
        measures="requests,avg_time_ms,p95_time_ms",
        user="alice",
        order="-requests",
        limit=5,
        rollup="true",
    )
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["dimensions"] == ["day", "class"]
    assert body["measures"] == ["requests", "avg_time_ms", "p95_time_ms"]
    assert len(body["rows"]) == 5 and body["truncated"] is True
    assert set(body["rows"][0]) == {"day", "class", "requests", "avg_time_ms", "p95_time_ms"}
    alice = expected(
        seeded, [], ["requests", "p95_time_ms"], lambda r: r.event.requester.username == "alice"
    )
    assert body["totals"]["requests"] == alice[()]["requests"]
    assert body["totals"]["p95_time_ms"] == pytest.approx(alice[()]["p95_time_ms"])
    counts = [r["requests"] for r in body["rows"]]
    assert counts == sorted(counts, reverse=True)


def test_cube_csv_is_streamed_with_a_header(client, admin_key, seeded):
    resp = get(
        client,
        admin_key,
        "cube",
        group_by="user,cache_hit",
        measures="requests,error_rate",
        format="csv",
    )
    assert resp.status_code == 200
    assert resp.mimetype == "text/csv" and resp.is_streamed
    assert resp.headers["X-Truncated"] == "false"
    table = list(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert table[0] == ["user", "cache_hit", "requests", "error_rate"]
    want = expected(seeded, ["user", "cache_hit"], ["requests"])
    assert {(r[0], r[1] == "true"): int(r[2]) for r in table[1:]} == {
        k: v["requests"] for k, v in want.items()
    }


def record(app, *events):
    Recorder(services(app).engine).record(list(events))


def csv_table(resp) -> list[list[str]]:
    return list(csv.reader(io.StringIO(resp.get_data(as_text=True))))


def test_pivot_values_named_like_columns_overwrite_nothing(app, client, admin_key):
    # Users called "day" and "requests": their columns must not replace the date or a measure.
    when = utc_now().replace(hour=12, minute=0, second=0, microsecond=0)
    for n, name in enumerate(["day", "day", "requests", "alice"]):
        record(
            app, Event(f"p{n}", when, Requester(n + 10, name, "10.0.0.1", "t"), "predict", 200, 1.0)
        )
    params = {"group_by": "day,user", "pivot": "user"}
    body = get(client, admin_key, "cube", **params).get_json()
    day = when.date().isoformat()
    assert body["columns"] == ["day", "user=alice", "user=day", "user=requests"]
    assert body["rows"] == [{"day": day, "user=alice": 1, "user=day": 2, "user=requests": 1}]
    table = csv_table(get(client, admin_key, "cube", format="csv", **params))
    assert table == [body["columns"], [day, "1", "2", "1"]]


def test_rollup_csv_tells_a_subtotal_from_a_value_and_defuses_formulas(app, client, admin_key):
    when = utc_now()
    for n, (name, agent) in enumerate(
        [("bob", "(all)"), ("bob", "curl/8"), ("=cmd|' /C calc'!A0", "@SUM(1+1)")]
    ):
        record(
            app, Event(f"c{n}", when, Requester(n, name, "10.0.0.1", agent), "predict", 200, 1.0)
        )
    resp = get(
        client,
        admin_key,
        "cube",
        group_by="user,user_agent",
        rollup="true",
        order="user,user_agent",
        format="csv",
    )
    assert csv_table(resp) == [
        ["user", "user_agent", "requests", "_level"],
        ["'=cmd|' /C calc'!A0", "'@SUM(1+1)", "1", "2"],
        ["bob", "(all)", "1", "2"],  # a user agent that happens to read (all)
        ["bob", "curl/8", "1", "2"],
        ["'=cmd|' /C calc'!A0", "", "1", "1"],
        ["bob", "", "2", "1"],
        ["", "", "3", "0"],
    ]


@pytest.mark.parametrize(
    "extra", [{}, {"rollup": "true"}, {"pivot": "cache_hit"}], ids=["plain", "rollup", "pivot"]
)
def test_csv_says_when_limit_cut_rows(client, admin_key, seeded, extra):
    dims = ["class", "day"] if "pivot" in extra else ["class", "day", "cache_hit"]
    groups = len(expected(seeded, dims, ["requests"]))  # the rows there are to show
    params = {"group_by": "class,day,cache_hit", "format": "csv", **extra}

    def shown(resp) -> int:
        rows = csv_table(resp)[1:]
        return sum(1 for r in rows if r[-1] == "3") if "rollup" in extra else len(rows)

    cut = get(client, admin_key, "cube", limit=groups - 1, **params)
    assert cut.headers["X-Truncated"] == "true" and shown(cut) == groups - 1
    whole = get(client, admin_key, "cube", limit=groups, **params)
    assert whole.headers["X-Truncated"] == "false" and shown(whole) == groups


def test_pivoting_the_only_dimension_of_an_empty_warehouse_has_a_header(client, admin_key):
    params = {"group_by": "status", "pivot": "status"}
    body = get(client, admin_key, "cube", **params).get_json()
    assert body["columns"] == ["measure"] and body["rows"] == [{"measure": "requests"}]
    assert csv_table(get(client, admin_key, "cube", format="csv", **params)) == [
        ["measure"],
        ["requests"],
    ]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"group_by": "colour"}, "group_by"),
        ({"measures": "speed"}, "measures"),
        ({"flavour": "x"}, "flavour"),
        ({"from": "2026-11-31"}, "from"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1000001"}, "limit"),
        ({"group_by": "day", "order": "user"}, "order"),
        ({"group_by": "day", "order": "--requests"}, "order"),
        ({"group_by": "concept:99"}, "group_by"),
        ({"format": "xml"}, "format"),
    ],
)
def test_bad_cube_parameters_are_400(client, admin_key, params, named):
    resp = get(client, admin_key, "cube", **params)
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert error["code"] == "bad_request" and error["message"].startswith(f"{named}:")


@pytest.mark.parametrize("path", ["cube", "summary", "timeseries", "events", "concepts"])
@pytest.mark.parametrize("parameter", ["concept", "concept:3"])
def test_an_unknown_concept_is_400_everywhere(client, admin_key, seeded, path, parameter):
    resp = get(client, admin_key, path, **{parameter: "unicorn"})
    assert resp.status_code == 400
    assert resp.get_json()["error"]["message"].startswith(f"{parameter}: no concept named")
    parent = get(client, admin_key, "concepts", parent="unicorn").get_json()["error"]
    assert parent["message"].startswith("parent: no concept named")


def test_concepts_and_formats_in_any_case(client, admin_key, seeded):
    def requests(path, **params):
        body = get(client, admin_key, path, **params).get_json()
        return body["totals"]["requests"] if path == "summary" else body["rows"]

    assert requests("summary", concept="Dog") == requests("summary", concept="dog") > 0
    assert requests("cube", image_format="jpeg") == requests("cube", image_format="JPEG")
    assert requests("cube", image_format="jpeg")[0]["requests"] > 0
    dog = get(client, admin_key, "concepts", parent="DOG").get_json()
    assert dog["concept"]["name"] == "dog"


def test_the_widest_date_range_is_every_event(client, admin_key, seeded):
    # "to=9999-12-31" used to be refused as "not an ISO date": the end of that day is past
    # the last moment Python's datetime holds. It means "no upper bound".
    for path in ("cube", "summary", "timeseries", "events"):
        resp = get(client, admin_key, path, **{"from": "0001-01-01", "to": "9999-12-31"})
        assert resp.status_code == 200, resp.get_json()
    resp = get(client, admin_key, "cube", **{"from": "0001-01-01", "to": "9999-12-31"})
    assert resp.get_json()["rows"] == [{"requests": len(seeded)}]


@pytest.mark.parametrize(
    ("params", "named"),
    [({"from": "0001-01-01T00:00+01:00"}, "from"), ({"to": "9999-12-31T23:00-05:00"}, "to")],
)
def test_a_moment_outside_the_calendar_in_utc_is_out_of_range(client, admin_key, params, named):
    # Their UTC equivalents fall in the years 0 and 10000 (an OverflowError, a 500, before).
    resp = get(client, admin_key, "cube", **params)
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["error"]["message"].startswith(f"{named}:")
    assert "out of range" in resp.get_json()["error"]["message"]


def test_repeated_parameter_is_400(client, admin_key):
    resp = client.get(f"{API}/cube?user=a&user=b", headers={"Authorization": f"Bearer {admin_key}"})
    assert resp.status_code == 400 and "more than once" in resp.get_json()["error"]["message"]


HOSTILE = [
    "'; DROP TABLE api_event_fact; --",
    "1 OR 1=1",
    "alice' OR '1'='1",
    '" OR ""="',
    "requests) FROM user_dim; --",
    "day; DELETE FROM class_dim",
    "concept:1; DROP TABLE concept_dim",
    "%00\x00",
    "\u202e" * 10,
    "x" * 5000,
]
PARAMETERS = [
    "group_by",
    "measures",
    "order",
    "limit",
    "rollup",
    "pivot",
    "format",
    "from",
    "to",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "quarter",
    "year",
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
    "concept",
    "concept:2",
]


def table_state(app):
    engine = services(app).engine
    with engine.connect() as conn:
        return (
            sorted(inspect(engine).get_table_names()),
            conn.execute(select(func.count()).select_from(api_event_fact)).scalar_one(),
            conn.execute(select(func.count()).select_from(class_dim)).scalar_one(),
            conn.execute(select(func.count()).select_from(user_dim)).scalar_one(),
        )


def test_sql_injection_at_every_parameter(app, client, admin_key, seeded):
    before = table_state(app)
    for endpoint in ("cube", "summary", "timeseries", "events", "concepts"):
        for name in [*PARAMETERS, "grain", "parent"]:
            for value in HOSTILE:
                params = {name: value}
                if endpoint == "cube" and name not in ("group_by", "pivot"):
                    params.setdefault("group_by", "day")
                resp = get(client, admin_key, endpoint, **params)
                assert resp.status_code in (200, 400), (endpoint, name, value, resp.status_code)
                if resp.status_code == 200 and endpoint in ("cube", "events"):
                    assert resp.mimetype == "application/json" or name == "format"
                    assert resp.get_json()["rows"] == [], (endpoint, name, value)
                if resp.status_code == 400:
                    error = resp.get_json()["error"]
                    assert error["code"] == "bad_request"
                    # The README promises messages that start with the parameter's name.
                    assert error["message"].startswith(f"{name[:40]}:"), (endpoint, name, error)
    assert table_state(app) == before


def test_summary(app, client, admin_key, seeded):
    now = utc_now()
    who = Requester(9, "zed", "10.9.9.9", "curl/8")
    Recorder(services(app).engine).record(
        [
            Event("t1", now, who, "predict", 200, 4.0),
            Event("t2", now, who, "predict", 503, 2.0, error_code="model_unavailable"),
            Event("y1", now - timedelta(days=1), who, "predict", 200, 3.0),
        ]
    )
    body = get(client, admin_key, "summary").get_json()
    assert set(body) == {
        "totals",
        "today",
        "yesterday",
        "top_classes",
        "top_users",
        "errors_by_code",
        "models",
    }
    assert body["totals"]["requests"] == len(seeded) + 3
    assert body["today"] == {"requests": 2, "errors": 1}
    assert body["yesterday"] == {"requests": 1, "errors": 0}
    want = expected(seeded, ["class"], ["requests"], lambda r: r.event.status_code == 200)
    top = sorted(want.items(), key=lambda kv: (-kv[1]["requests"], kv[0]))[:10]
    assert [(r["class"], r["requests"]) for r in body["top_classes"]] == [
        (k[0], v["requests"]) for k, v in top
    ]
    assert {r["error_code"] for r in body["errors_by_code"]} >= {
        "model_unavailable",
        "corrupt_image",
    }
    assert {(r["model"], r["fallback"]) for r in body["models"]} == {
        ("efficientnet-lite0@0.1.0+fp32", False),
        ("efficientnet-lite0@0.1.0+int8", True),
    }  # no "none": failed requests had no model
    alice = get(client, admin_key, "summary", user="alice").get_json()
    assert [r["user"] for r in alice["top_users"]] == ["alice"]
    assert alice["today"] == {"requests": 0, "errors": 0}
    for name in ("p50_time_ms", "p95_time_ms", "p99_time_ms"):
        assert alice["totals"][name] == pytest.approx(
            expected(seeded, [], [name], lambda r: r.event.requester.username == "alice")[()][name]
        )


def test_timeseries(client, admin_key, seeded):
    body = get(
        client,
        admin_key,
        "timeseries",
        grain="hour",
        measures="requests,p95_time_ms",
        to="2026-12-29",
    ).get_json()
    assert body["grain"] == "hour" and body["measures"] == ["requests", "p95_time_ms"]
    want = expected(seeded, ["hour"], ["requests"], lambda r: r.event.event_time.day == 29)
    assert [(r["time"], r["requests"]) for r in body["rows"]] == sorted(
        (k[0], v["requests"]) for k, v in want.items()
    )
    assert get(client, admin_key, "timeseries", grain="fortnight").status_code == 400


def test_events(client, admin_key, seeded):
    body = get(client, admin_key, "events", limit=5, user="bob").get_json()
    bobs = sorted(
        (r for r in seeded if r.event.requester.username == "bob"),
        key=lambda r: r.event.event_time,
        reverse=True,
    )
    assert [r["request_id"] for r in body["rows"]] == [r.event.request_id for r in bobs[:5]]
    first = body["rows"][0]
    assert set(first) == {
        "event_time",
        "request_id",
        "user",
        "ip",
        "class",
        "confidence",
        "time_ms",
        "status",
        "error_code",
        "model",
        "cache_hit",
        "fallback",
        "filename",
    }
    assert first["user"] == "bob"
    assert get(client, admin_key, "events", limit=501).status_code == 400


def test_concepts_drill_down_from_animal_to_a_breed(client, admin_key, seeded):
    roots = get(client, admin_key, "concepts").get_json()
    assert roots["concept"] is None and roots["path"] == []
    names = {c["name"]: c for c in roots["children"]}
    animals = {281, 283, 285, 207, 208, 250, 134, 1}  # not 517 (crane, the machine), 948, 963
    assert names["animal"]["requests"] == sum(
        1 for r in seeded if r.event.predicted and r.event.predicted.class_id in animals
    )
    assert names["artifact"]["requests"] > 0 and names["matter"]["requests"] > 0
    node = "animal"
    for step in ("chordate", "vertebrate", "mammal", "placental", "carnivore", "canine", "dog"):
        children = {
            c["name"]: c
            for c in get(client, admin_key, "concepts", parent=node).get_json()["children"]
        }
        assert step in children, (node, list(children))
        node = children[step]["wnid"]
    dog = get(client, admin_key, "concepts", parent=node).get_json()
    assert [p["name"] for p in dog["path"]][-3:] == ["carnivore", "canine", "dog"]
    breeds = sum(c["requests"] for c in dog["children"])
    assert breeds == sum(
        1 for r in seeded if r.event.predicted and r.event.predicted.class_id in (207, 208, 250)
    )
    husky = get(client, admin_key, "concepts", parent="Siberian_husky").get_json()
    assert husky["children"] == [] and husky["concept"]["name"] == "Siberian_husky"
    crane = get(client, admin_key, "concepts", parent="crane")
    assert crane.status_code == 400 and "wnid" in crane.get_json()["error"]["message"]


def test_analytics_reads_go_to_the_analytics_database(tmp_path, model_dir):
    # Two different warehouses stand in for a primary and a replica that is behind: every
    # analytics answer (and drift's windows) must come from the one IMGCLASS_ANALYTICS_…
    # names, while predictions are written to the primary. The streaming-replica test
    # (tests/warehouse/test_replica.py) shows the same on a real PostgreSQL replica.
    from imgclass.app import create_app
    from imgclass.warehouse.db import make_engine
    from imgclass.warehouse.migrate import upgrade
    from tests.conftest import make_settings

    replica_url = f"sqlite:///{tmp_path / 'replica.db'}"
    replica = make_engine(replica_url)
    upgrade(replica)
    rows = make_events(60, seed=5)
    store(replica, rows)
    settings = make_settings(tmp_path / "data", model_dir, analytics_database_url=replica_url)
    app = create_app(settings)
    client = app.test_client()
    key = settings.admin_token_path.read_text().strip()
    primary = services(app).engine
    assert count_facts(primary) == 0

    everything = {"from": "2000-01-01", "to": "2100-01-01"}
    cube = get(client, key, "cube", measures="requests", **everything).get_json()
    assert cube["rows"] == [{"requests": len(rows)}]
    summary = get(client, key, "summary", **everything).get_json()
    assert summary["totals"]["requests"] == len(rows)
    events = get(client, key, "events", limit=100, **everything).get_json()
    assert {e["request_id"] for e in events["rows"]} == {r.event.request_id for r in rows}
    assert services(app).drift.engine is services(app).analytics_engine


def count_facts(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(api_event_fact)).scalar_one()
