"""Engines per dialect: the configured pool on PostgreSQL, and connections that heal."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from imgclass.config import Settings
from imgclass.warehouse.db import WRITE, make_engine

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
