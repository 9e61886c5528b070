"""The schema comes from Alembic migrations, and they produce exactly the declared tables.

Every test here runs on SQLite and on PostgreSQL (``backends``), except the
SQLite pragmas.
"""

from __future__ import annotations

import multiprocessing
from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, inspect, select, text

from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import current_revision, head_revision, upgrade
from imgclass.warehouse.recorder import Event, Recorder, Requester
from imgclass.warehouse.schema import (
    NONE_KEY,
    api_event_fact,
    class_dim,
    image_dim,
    metadata,
    model_dim,
    user_dim,
)

pytestmark = pytest.mark.backends

EVENT = Event(
    request_id="r0",
    event_time=datetime(2026, 11, 25, 14, 32, 10),
    requester=Requester(0, "anonymous", "127.0.0.1", "curl/8"),
    endpoint="predict",
    status_code=400,
    time_taken_ms=1.0,
    error_code="empty_file",
)


@pytest.fixture
def empty_engine(empty_database_url):
    engine = make_engine(empty_database_url)
    yield engine
    engine.dispose()


def test_upgrade_from_empty_matches_the_declared_schema(empty_engine):
    engine = empty_engine
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    tables = set(inspect(engine).get_table_names())
    assert {
        "api_event_fact",
        "time_dim",
        "user_dim",
        "image_dim",
        "class_dim",
        "model_dim",
    } <= tables


def test_upgrade_is_idempotent_and_seeds_the_none_members(empty_engine):
    engine = empty_engine
    upgrade(engine)
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT class_id, class_name FROM class_dim WHERE class_key = 0")
        ).one() == (-1, "none")
        assert (
            conn.execute(text("SELECT image_id FROM image_dim WHERE image_key = 0")).scalar_one()
            == "none"
        )
        assert (
            conn.execute(text("SELECT model_name FROM model_dim WHERE model_key = 0")).scalar_one()
            == "none"
        )


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() > 0


def _open_together(path: str, start) -> None:
    engine = make_engine(f"sqlite:///{path}")
    start.wait()
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()


def test_processes_opening_a_new_sqlite_file_together_all_connect(tmp_path):
    # Switching a brand-new file to WAL takes an exclusive lock, and SQLite answers
    # "database is locked" at once instead of waiting the busy timeout. Before the
    # connect hook retried, about one round in three of this failed.
    ctx = multiprocessing.get_context("fork")
    for round_ in range(10):
        start = ctx.Barrier(4)
        procs = [
            ctx.Process(target=_open_together, args=(str(tmp_path / f"{round_}.db"), start))
            for _ in range(4)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 4, f"round {round_}"


def test_generated_keys_never_collide_with_the_explicit_none_members(db_engine):
    # Migration 0001 inserts key 0 explicitly; on PostgreSQL that leaves the SERIAL
    # sequences untouched, so the first generated key must still be a new one.
    two_rows = {
        image_dim: [{"image_id": c * 64, "image_filename": "a.jpg"} for c in "ab"],
        class_dim: [{"class_id": i, "class_name": "some class"} for i in (281, 282)],
        model_dim: [{"model_name": "m", "model_version": v, "sha256": "c" * 64} for v in "12"],
        user_dim: [
            {"user_id": 0, "username": "anonymous", "ip_address": ip, "user_agent": ""}
            for ip in ("::1", "127.0.0.1")
        ],
    }
    with db_engine.begin() as conn:
        for table, (first, second) in two_rows.items():
            key = conn.execute(table.insert().values(**first)).inserted_primary_key[0]
            assert key not in (None, NONE_KEY), table.name
            assert conn.execute(table.insert().values(**second)).inserted_primary_key[0] > key


def test_the_fact_booleans_default_to_false_in_the_database(db_engine):
    # Written without cache_hit/is_fallback, as an older writer would: the migration's
    # server defaults must fill them (false), not fail on NOT NULL.
    Recorder(db_engine).record([EVENT])
    with db_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO api_event_fact (request_id, timestamp_key, user_key, image_key, "
                "class_key, model_key, event_time, time_taken, request_count, status_code, "
                "endpoint) SELECT 'raw', timestamp_key, user_key, 0, 0, 0, event_time, 1.0, 1, "
                "400, 'predict' FROM api_event_fact"
            )
        )
        row = conn.execute(
            select(api_event_fact.c.cache_hit, api_event_fact.c.is_fallback).where(
                api_event_fact.c.request_id == "raw"
            )
        ).one()
    assert row == (False, False)


def test_every_migration_downgrades_and_upgrades_again(empty_engine):
    from alembic import command

    from imgclass.warehouse.migrate import alembic_config

    engine = empty_engine
    upgrade(engine)
    config = alembic_config(engine)
    command.downgrade(config, "0001")
    assert current_revision(engine) == "0001"
    upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_upgrade_from_empty_commits_once(empty_engine):
    # All migrations are one transaction: a starter that commits between two of them lets
    # another read a stale version and replay the next one (and fail: "table … already
    # exists"). The race below hits that window only now and then; this sees it every time.
    commits = []
    event.listen(empty_engine, "commit", lambda conn: commits.append(conn))
    upgrade(empty_engine)
    assert len(commits) == 1
    assert current_revision(empty_engine) == head_revision()


def _start_and_migrate(url: str, start) -> None:
    engine = make_engine(url)
    start.wait()
    upgrade(engine)
    engine.dispose()


def test_replicas_starting_together_migrate_once(empty_database_url, empty_engine):
    # Every replica of a cluster migrates on start. On PostgreSQL, without the advisory
    # lock, two of them create the same tables at once and one fails; on SQLite, without
    # one transaction around all migrations, one replays a migration another has just run.
    starters = 4
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(starters)
    procs = [
        ctx.Process(target=_start_and_migrate, args=(empty_database_url, start))
        for _ in range(starters)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * starters
    assert current_revision(empty_engine) == head_revision()
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM class_dim")).scalar_one() == 1


def test_a_percent_in_the_url_migrates(tmp_path, database_url):
    """URLs percent-encode special characters (passwords); a data dir may be named with %."""
    sqlite = make_engine(f"sqlite:///{tmp_path / '100%'}/w.db")
    upgrade(sqlite)
    assert current_revision(sqlite) == head_revision()
    sqlite.dispose()
    if database_url.startswith("postgresql"):
        # Trust authentication on the local server: the password is never asked for.
        engine = make_engine(database_url.replace("postgres@", "postgres:p%25ss%2Fword@"))
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        engine.dispose()
