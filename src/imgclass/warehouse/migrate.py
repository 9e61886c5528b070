"""Run the Alembic migrations in ``warehouse/migrations`` against an engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from imgclass.warehouse.db import WRITE

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = int.from_bytes(b"imgclass")  # pg_advisory_xact_lock key (a bigint)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's Config is a ConfigParser, which reads % as interpolation: a percent-encoded
    # password or a data dir named with % would make every migration fail.
    url = engine.url.render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to call on every start (a no-op when current).

    Safe to call from several processes at once (replicas starting together): they
    take turns, and the later ones find the schema current.
    """
    config = alembic_config(engine)
    with engine.connect() as conn:
        # One immediate transaction on SQLite: concurrent starters wait their turn. It must
        # be open before Alembic sees the connection: Alembic treats SQLite as having no
        # transactional DDL and, when it owns the transaction, commits after every
        # migration, letting another starter slip in between, read a stale version and
        # replay a migration that has just run ("table … already exists").
        conn.execution_options(**WRITE)
        conn.begin()
        if conn.dialect.name == "postgresql":
            # PostgreSQL has no database-wide write lock: a transaction-scoped advisory lock
            # makes the others wait. The whole upgrade is this one transaction (DDL is
            # transactional there), so the lock is held until the schema is committed.
            # A backfill over millions of facts may take longer than a request's statement
            # timeout (IMGCLASS_DB_STATEMENT_TIMEOUT_S), and so may a replica's wait for
            # the lock while another runs it: the migration has none, from the start.
            conn.execute(text("SET LOCAL statement_timeout = 0"))
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.commit()


def head_revision() -> str:
    """The newest migration shipped with this code."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
