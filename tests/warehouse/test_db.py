"""Engines per dialect: the configured pool on PostgreSQL, and connections that heal."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from imgclass.config import Settings
from imgclass.warehouse.db import WRITE, make_engine, same_database

pytestmark = pytest.mark.postgresql


@pytest.fixture
def pool_settings(monkeypatch, postgres_url) -> Settings:
    for name, value in {
        "DATABASE_URL": postgres_url,
        "DB_POOL_SIZE": "2",
        "DB_MAX_OVERFLOW": "1",
        "DB_POOL_TIMEOUT_S": "0.2",
        "DB_POOL_RECYCLE_S": "600",
    }.items():
        monkeypatch.setenv(f"IMGCLASS_{name}", value)
    return Settings()


def test_the_pool_is_sized_from_the_settings(pool_settings):
    engine = make_engine(pool_settings.effective_database_url, **pool_settings.engine_options)
    try:
        held = [engine.connect() for _ in range(3)]  # pool_size 2 + max_overflow 1
        with pytest.raises(PoolTimeout):
            engine.connect()  # a fourth waits db_pool_timeout_s, then fails
        conn = held[0]
        assert conn.execute(text("SHOW transaction_isolation")).scalar_one() == "read committed"
        assert conn.execute(text("SHOW application_name")).scalar_one() == "imgclass"
        for c in held:
            c.close()
        assert engine.pool._recycle == 600
    finally:
        engine.dispose()


@pytest.mark.parametrize("pre_ping", [True, False])
def test_pre_ping_replaces_a_connection_the_server_dropped(postgres_url, pre_ping):
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0, pool_pre_ping=pre_ping)
    admin = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with admin.connect() as conn:  # a server restart or a proxy timeout, in small
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        def use():
            with engine.connect() as conn:
                conn.execution_options(**WRITE)  # harmless on PostgreSQL
                with conn.begin():
                    return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()

        if pre_ping:
            assert use() != pid
        else:
            with pytest.raises(OperationalError):
                use()
    finally:
        engine.dispose()
        admin.dispose()


def test_statement_timeout_cancels_a_runaway_statement(postgres_url):
    engine = make_engine(postgres_url, statement_timeout_s=0.2)
    unbounded = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "200ms"
            with pytest.raises(OperationalError, match="statement timeout"):
                conn.execute(text("SELECT pg_sleep(5)"))
        with unbounded.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "0"
    finally:
        engine.dispose()
        unbounded.dispose()


def test_migrations_run_without_the_statement_timeout(fresh_postgres):
    # A replica starting while another migrates waits for the migration lock, here for a
    # second, five times its statement timeout; then it migrates without being cancelled.
    from imgclass.warehouse.migrate import (
        MIGRATION_LOCK_KEY,
        current_revision,
        head_revision,
        upgrade,
    )

    engine = make_engine(fresh_postgres, statement_timeout_s=0.2)
    other_replica = make_engine(fresh_postgres)
    try:
        with other_replica.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            release = threading.Timer(
                1.0,
                lambda: holder.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                ),
            )
            release.start()
            started = time.monotonic()
            try:
                upgrade(engine)
                waited = time.monotonic() - started
            finally:
                release.join()
        assert waited >= 1.0  # it did wait for the lock
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
        other_replica.dispose()


@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://"])
def test_urls_without_a_driver_use_the_psycopg_we_ship(postgres_url, scheme):
    """libpq's spelling (and most hosts'): SQLAlchemy alone would look for psycopg2."""
    url = postgres_url.replace("postgresql+psycopg://", scheme)
    assert url.startswith(scheme)
    engine = make_engine(url)
    try:
        assert engine.dialect.driver == "psycopg"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
    settings = Settings(database_url=url, analytics_database_url=url)
    assert settings.effective_database_url == postgres_url
    assert settings.effective_analytics_database_url == postgres_url
    assert same_database(url, postgres_url)


def test_a_malformed_url_is_a_clear_error_without_the_password():
    bad = "postgresql+psycopg://postgres:s3cret@127.0.0.1:notaport/x"
    with pytest.raises(ValueError, match=r"not a database URL \(its port is not a number\)"):
        make_engine(bad)
    with pytest.raises(ValidationError, match="not a database URL") as caught:
        Settings(database_url=bad)
    assert "s3cret" not in str(caught.value.errors(include_input=False))
    with pytest.raises(ValidationError, match="dialect"):
        Settings(analytics_database_url="no url at all")
    assert Settings(database_url="").database_url is None  # empty: the default SQLite file
