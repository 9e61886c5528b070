"""A throwaway PostgreSQL database per test session on the local server (127.0.0.1:5432).

The session creates ``imgclass_test_<random>`` (a random name, so parallel pytest
workers and other checkouts on the same server never meet) and drops it at the
end. Each test gets it back in the state of a fresh install:

- migrated (``reset(migrated=True)``): the first time by running the real Alembic
  migrations, which also records what they seeded; after that, while the schema is
  still at head, by emptying every table and restoring those seed rows and the
  sequences (a few tens of ms, against a few hundred for migrating again and a
  second or more for ``CREATE``/``DROP DATABASE`` here);
- empty (``reset(migrated=False)``): the ``public`` schema dropped and recreated,
  for tests of the migrations themselves.

When no server answers, PostgreSQL tests are skipped with the reason, except
under CI, where they fail: CI must never pass by skipping them.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, select, text

from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import head_revision, upgrade
from imgclass.warehouse.schema import metadata
from tests.support.system import IN_CI

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
ADMIN_DSN = f"host={HOST} port={PORT} user={USER} dbname=postgres connect_timeout=3"


def server_url(database: str, host: str = HOST, port: int = PORT) -> str:
    """The SQLAlchemy URL (psycopg 3 driver) of ``database`` on a local server."""
    return f"postgresql+psycopg://{USER}@{host}:{port}/{database}"


def postgres_unavailable(reason: str) -> None:
    """Skip (or fail under CI) a test that needs PostgreSQL."""
    message = f"PostgreSQL tests need a server at {HOST}:{PORT} (user {USER}): {reason}"
    if IN_CI:
        pytest.fail(f"{message} (under CI they must run; scripts/start-services.sh starts it)")
    pytest.skip(f"{message}; start it with scripts/start-services.sh")


class SessionDatabase:
    """One database on the local server, created for this test session."""

    def __init__(self) -> None:
        self.name = f"imgclass_test_{secrets.token_hex(6)}"
        self.url = server_url(self.name)
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))

        self._seed: dict[str, list[dict]] | None = None  # rows the migrations inserted

    def reset(self, *, migrated: bool) -> None:
        """Back to a fresh install's state (``migrated``) or to no tables at all."""
        engine = make_engine(self.url)
        try:
            with engine.begin() as conn:
                # An idle pooled connection holds no lock, but one left in a transaction (a
                # killed worker's, say) would make DELETE or DROP SCHEMA wait forever.
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            if migrated and self._seed is not None and _at_head(engine):
                _delete_and_reseed(engine, self._seed)
                return
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
            if migrated:
                upgrade(engine)
                self._seed = _snapshot(engine)
        finally:
            engine.dispose()

    def drop(self) -> None:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )


def open_session_database() -> SessionDatabase:
    try:
        return SessionDatabase()
    except psycopg.OperationalError as exc:
        postgres_unavailable(str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer")
        raise AssertionError("unreachable") from exc


def _at_head(engine: Engine) -> bool:
    """Whether the schema is exactly the migrated one (a test may have downgraded it)."""
    with engine.connect() as conn:
        tables = set(
            conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                )
            ).scalars()
        )
        if tables != {*metadata.tables, "alembic_version"}:
            return False
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
            head_revision()
        )


def _snapshot(engine: Engine) -> dict[str, list[dict]]:
    with engine.connect() as conn:
        return {
            table.name: [dict(row._mapping) for row in conn.execute(select(table))]
            for table in metadata.sorted_tables
        }


def _delete_and_reseed(engine: Engine, seed: dict[str, list[dict]]) -> None:
    with engine.begin() as conn:
        # DELETE, not TRUNCATE: a test leaves a few rows, and TRUNCATE's new files cost
        # tens of milliseconds per table.
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
        for table in metadata.sorted_tables:
            if seed[table.name]:
                conn.execute(table.insert(), seed[table.name])
            # Seed rows may carry explicit keys: the next generated one must come after them.
            for column in table.primary_key.columns:
                conn.execute(
                    text(
                        "SELECT setval(seq, GREATEST((SELECT MAX({c}) FROM {t}), 0) + 1, false) "
                        "FROM pg_get_serial_sequence(:t, :c) AS seq WHERE seq IS NOT NULL".format(
                            c=f'"{column.name}"', t=f'"{table.name}"'
                        )
                    ),
                    {"t": table.name, "c": column.name},
                )


@contextmanager
def temporary_database() -> Iterator[str]:
    """A uniquely named database for one test, dropped afterwards."""
    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        postgres_unavailable(f"PostgreSQL is not running on {HOST}:{PORT}: {exc}")
    name = f"imgclass_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
