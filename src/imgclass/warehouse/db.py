"""One SQLAlchemy engine per process, configured for concurrent writers.

SQLite runs in WAL mode (readers never block the writer) with a busy timeout
(writers queue instead of failing), ``synchronous=FULL`` (a commit survives a
power cut, since a committed event is an acknowledged one) and foreign keys
on. Write transactions on SQLite start with ``BEGIN IMMEDIATE`` so that two
processes never both read, then both try to upgrade to a write lock.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

BUSY_TIMEOUT_MS = 30_000
WRITE = {"imgclass_write": True}  # execution option: start an immediate (write) transaction


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    # A "file:" URI (?uri=true) names its path inside the URI: no directory to create.
    is_uri = parsed.query.get("uri") == "true" or (parsed.database or "").startswith("file:")
    if parsed.database and parsed.database != ":memory:" and not is_uri:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event below emit BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        write = conn.get_execution_options().get("imgclass_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
