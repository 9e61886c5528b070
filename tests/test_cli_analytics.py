"""imgclass demo seed and imgclass stats, run as a user would."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

import pytest
from click.testing import CliRunner
from sqlalchemy import func, inspect, select

from imgclass.cli import main
from imgclass.warehouse.db import make_engine
from imgclass.warehouse.demo import FAILURES, USERS
from imgclass.warehouse.recorder import Event, Recorder, Requester, utc_now
from imgclass.warehouse.schema import api_event_fact, prediction_feedback, user_dim


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLASS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("IMGCLASS_DATABASE_URL", raising=False)
    return tmp_path


def run(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, list(args), catch_exceptions=False)


def engine(env):
    return make_engine(f"sqlite:///{env / 'data' / 'imgclass.db'}")


def test_demo_seed_records_realistic_events(env):
    result = run("demo", "seed", "--events", "3000", "--days", "7", "--seed", "4")
    assert result.exit_code == 0, result.output
    assert "recorded 3,000 events" in result.stdout
    with engine(env).connect() as conn:
        assert conn.execute(select(func.count()).select_from(api_event_fact)).scalar_one() == 3000
        users = set(conn.execute(select(user_dim.c.username).distinct()).scalars())
        assert users == {name for name, *_ in USERS}
        codes = set(conn.execute(select(api_event_fact.c.error_code).distinct()).scalars()) - {None}
        assert codes <= {code for _, code, _ in FAILURES} | {"model_unavailable"}
        assert len(codes) >= 4
        for flag in (api_event_fact.c.cache_hit, api_event_fact.c.is_fallback):
            share = conn.execute(
                select(func.avg(func.cast(flag, api_event_fact.c.time_taken.type)))
            ).scalar_one()
            assert 0.01 < share < 0.3
        assert conn.execute(select(func.count()).select_from(prediction_feedback)).scalar_one() > 10


def test_stats_table_csv_and_json(env):
    assert run("demo", "seed", "--events", "800", "--days", "3").exit_code == 0
    table = run(
        "stats",
        "--group-by",
        "user",
        "--measures",
        "requests,p95_time_ms",
        "--order",
        "-requests",
        "--rollup",
    )
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert "user" in lines[1] and "p95_time_ms" in lines[1]
    assert "alice" in lines[3] and "(all)" in table.stdout and "800" in table.stdout
    as_csv = run(
        "stats",
        "--group-by",
        "day",
        "--filter",
        "user=alice,bob",
        "--filter",
        "status=2xx",
        "--csv",
    )
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == ["day", "requests"] and len(rows) >= 3
    as_json = json.loads(
        run("stats", "--group-by", "user", "--filter", "user=alice,bob", "--json").stdout
    )
    assert {r["user"] for r in as_json["rows"]} == {"alice", "bob"}
    assert sum(int(r[1]) for r in rows[1:]) <= sum(r["requests"] for r in as_json["rows"])


def test_stats_bad_options_say_what_is_wrong(env):
    result = CliRunner().invoke(main, ["stats", "--group-by", "colour"])
    assert result.exit_code == 2 and "group_by: unknown dimension 'colour'" in result.output
    result = CliRunner().invoke(main, ["stats", "--filter", "alice"])
    assert result.exit_code == 2 and "DIM=VALUES" in result.output


def test_stats_reads_the_analytics_database(env, monkeypatch):
    # With IMGCLASS_ANALYTICS_DATABASE_URL (a read replica) stats reads there, never
    # migrating it (a replica refuses writes); seeding still writes to the primary.
    replica = env / "replica"
    monkeypatch.setenv("IMGCLASS_DATA_DIR", str(replica))
    assert run("demo", "seed", "--events", "120", "--days", "2").exit_code == 0
    monkeypatch.setenv("IMGCLASS_DATA_DIR", str(env / "data"))
    monkeypatch.setenv("IMGCLASS_ANALYTICS_DATABASE_URL", f"sqlite:///{replica / 'imgclass.db'}")
    answer = json.loads(run("stats", "--from", "2000-01-01", "--json").stdout)
    assert answer["rows"] == [{"requests": 120}]
    assert not (env / "data" / "imgclass.db").exists()  # the primary was not even opened


def test_stats_pivot_keeps_the_dimension_columns(env):
    assert run("demo", "seed", "--events", "200", "--days", "2").exit_code == 0
    now = utc_now()
    Recorder(engine(env)).record(
        [Event("d1", now, Requester(7, "day", "10.1.1.1", "x"), "predict", 200, 1.0)]
    )
    answer = json.loads(run("stats", "--group-by", "day,user", "--pivot", "user", "--json").stdout)
    assert answer["columns"][0] == "day" and len(set(answer["columns"])) == len(answer["columns"])
    assert "user=day" in answer["columns"] and "user=alice" in answer["columns"]
    assert all(len(row["day"]) == 10 for row in answer["rows"])  # dates, not a user's count
    today = next(row for row in answer["rows"] if row["day"] == now.date().isoformat())
    assert today["user=day"] == 1
    table = run("stats", "--group-by", "day,user", "--pivot", "user")
    assert "user=day" in table.stdout


def test_stats_pivot_of_the_only_dimension_prints_a_header(env):
    assert run("db", "upgrade").exit_code == 0  # an empty warehouse
    rows = list(
        csv.reader(
            io.StringIO(run("stats", "--group-by", "status", "--pivot", "status", "--csv").stdout)
        )
    )
    assert rows == [["measure"], ["requests"]]


def test_stats_rollup_marks_subtotals_in_table_and_csv(env):
    assert run("db", "upgrade").exit_code == 0
    now = utc_now()
    who = [("bob", "(all)"), ("bob", "[/bold]"), ("=1+1", "curl/8")]
    Recorder(engine(env)).record(
        [
            Event(f"r{i}", now, Requester(i, u, "10.0.0.1", a), "predict", 200, 1.0)
            for i, (u, a) in enumerate(who)
        ]
    )
    args = ("stats", "--group-by", "user,user_agent", "--rollup", "--order", "user,user_agent")
    rows = list(csv.reader(io.StringIO(run(*args, "--csv").stdout)))
    assert rows[0] == ["user", "user_agent", "requests", "_level"]
    assert rows[1:] == [
        ["'=1+1", "curl/8", "1", "2"],
        ["bob", "(all)", "1", "2"],
        ["bob", "[/bold]", "1", "2"],
        ["'=1+1", "", "1", "1"],
        ["bob", "", "2", "1"],
        ["", "", "3", "0"],
    ]
    table = run(*args)
    assert table.exit_code == 0, table.output
    assert "[/bold]" in table.stdout  # shown as text, not read as markup
    assert table.stdout.count("(all)") == 5  # the real one, and four rolled-up cells


def test_stats_says_on_stderr_when_limit_cut_rows(env):
    assert run("demo", "seed", "--events", "300", "--days", "3").exit_code == 0
    for fmt in ("--csv", "--json", None):
        args = ["stats", "--group-by", "day,user", "--limit", "2", *([fmt] if fmt else [])]
        cut = run(*args)
        assert cut.exit_code == 0
        assert "more rows matched than --limit 2" in cut.stderr, fmt
        assert "more rows" not in cut.stdout
    rows = list(
        csv.reader(
            io.StringIO(run("stats", "--group-by", "day,user", "--limit", "2", "--csv").stdout)
        )
    )
    assert len(rows) == 3  # the header and two rows: CSV output stays clean
    whole = run("stats", "--group-by", "user", "--csv")
    assert whole.stderr == ""


def refused_for_want_of(missing):
    result = run("stats", "--group-by", "day")
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"Error: no warehouse at {missing / 'imgclass.db'} (set IMGCLASS_DATA_DIR "
        "(or IMGCLASS_DATABASE_URL / IMGCLASS_ANALYTICS_DATABASE_URL) to the warehouse; "
        "`imgclass demo seed` creates one to explore)"
    ]
    assert result.stdout == ""
    assert not missing.exists()


def test_stats_without_a_warehouse_says_so_and_creates_nothing(env, monkeypatch):
    monkeypatch.setenv("IMGCLASS_DATA_DIR", str(env / "dat"))  # mistyped
    refused_for_want_of(env / "dat")
    monkeypatch.delenv("IMGCLASS_DATA_DIR")
    monkeypatch.chdir(env)  # the default ./data, in a directory that has none
    refused_for_want_of(env / "data")


def test_stats_on_a_database_without_the_schema_says_so(env, monkeypatch):
    from tests.support.postgres import temporary_database

    with temporary_database() as url:
        monkeypatch.setenv("IMGCLASS_DATABASE_URL", url)
        result = run("stats")
        assert result.exit_code == 1
        assert "no warehouse at postgresql+psycopg://" in result.stderr
        assert "it has no imgclass schema" in result.stderr
        engine = make_engine(url)
        assert inspect(engine).get_table_names() == []  # nothing was migrated into it
        engine.dispose()


def test_demo_seed_twice_with_one_seed_adds_new_requests(env):
    for _ in range(2):
        assert run("demo", "seed", "--events", "500", "--days", "2", "--seed", "3").exit_code == 0
    with engine(env).connect() as conn:
        ids = conn.execute(select(api_event_fact.c.request_id)).scalars().all()
    assert len(ids) == 1000 and len(set(ids)) == 1000
    assert {i.split("-")[1] for i in ids} == {"3"}  # demo-<seed>-<run>-<n>
    assert len({i.split("-")[2] for i in ids}) == 2


def test_the_same_seed_gives_the_same_events_but_new_request_ids():
    from imgclass.vision.labels import imagenet_labels
    from imgclass.warehouse.demo import generate
    from imgclass.warehouse.recorder import ClassFacts

    labels = imagenet_labels()
    classes = [ClassFacts(i, labels.names[i], labels.wnids[i]) for i in range(len(labels))]
    now = utc_now()
    first, feedback = generate(400, 3, classes, now, seed=5)
    again, feedback_again = generate(400, 3, classes, now, seed=5)
    assert feedback == feedback_again
    assert {e.request_id for e in first}.isdisjoint(e.request_id for e in again)
    assert [replace(e, request_id="") for e in first] == [replace(e, request_id="") for e in again]
