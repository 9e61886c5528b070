"""One SQLAlchemy engine per process and database, configured per dialect.

SQLite (the embedded default) runs in WAL mode (readers never block the writer)
with a busy timeout (writers queue instead of failing), ``synchronous=FULL`` (a
commit survives a power cut, since a committed event is an acknowledged one)
and foreign keys on. Write transactions on SQLite start with ``BEGIN
IMMEDIATE`` so that two processes never both read, then both try to upgrade to
a write lock.

The SQLite file holds personal data (addresses, user agents, filenames, key hashes), so it
is created owner-only (0600) before SQLite opens it, in a data directory created 0700;
SQLite gives its ``-wal`` and ``-shm`` files the database file's permissions. Files and
directories that already exist keep theirs.

PostgreSQL gets none of that: it has row locks and real concurrent writers.
Its engine gets a sized connection pool (pre-ping, recycle: connections survive
a server restart or a proxy that drops idle ones) and READ COMMITTED isolation,
which the recorder's get-or-create relies on (``INSERT … ON CONFLICT DO
NOTHING`` then ``SELECT``: the second statement must see a row another
transaction committed meanwhile). The ``WRITE`` execution option is ignored
there, so code can pass it whatever the backend.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from imgclass.warehouse.percentile import SQLITE_FUNCTION, PercentileAggregate

BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10  # a server that does not answer fails fast instead of hanging a worker
WRITE = {"imgclass_write": True}  # execution option: start an immediate (write) transaction
# The PostgreSQL driver the package ships (psycopg 3). SQLAlchemy's default for a URL without
# a driver is psycopg2, which is not installed.
POSTGRES_DRIVER = "psycopg"


def parse_url(url: str) -> URL:
    """``url`` parsed, with PostgreSQL URLs on the driver we ship; ValueError if not a URL.

    ``postgresql://`` and ``postgres://`` (libpq's spelling, and what most hosting services
    hand out) mean ``postgresql+psycopg://``; a driver named explicitly is kept. The error
    never repeats the URL, which may hold a password.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "not a database URL (expected dialect[+driver]://user:password@host:port/database)"
        ) from None
    except ValueError:  # SQLAlchemy's int() of what follows the host's colon
        raise ValueError("not a database URL (its port is not a number)") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername=f"postgresql+{driver or POSTGRES_DRIVER}")
    return parsed


def normalize_url(url: str) -> str:
    """``url`` as every engine here is made from it (see :func:`parse_url`)."""
    parsed = parse_url(url)
    if parsed.drivername == make_url(url).drivername:
        return url  # unchanged: keep the caller's exact text
    return parsed.render_as_string(hide_password=False)


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout_s: float = 30.0,
    pool_recycle_s: int = 1800,
    pool_pre_ping: bool = True,
    statement_timeout_s: float = 0,
    sqlite_cache_kib: int = 2048,
) -> Engine:
    """An engine for ``url``; the pool options apply to server databases (not SQLite files),
    ``sqlite_cache_kib`` (each connection's page cache) to SQLite files only.

    ``Settings.engine_options`` holds the configured pool options:
    ``make_engine(settings.effective_database_url, **settings.engine_options)``.
    """
    url = normalize_url(url)
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, sqlite_cache_kib)
    connect_args = {}
    if backend == "postgresql":
        # Only where the URL does not say otherwise: connect_args would override it.
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        if "application_name" not in parsed.query:
            connect_args["application_name"] = "imgclass"
        if statement_timeout_s and "options" not in parsed.query:
            # gunicorn's timeout only replaces a worker that stops answering its heartbeat,
            # never a thread stuck on a database lock or a runaway query: PostgreSQL bounds
            # those itself, and the request fails as 503 storage_unavailable.
            connect_args["options"] = f"-c statement_timeout={int(statement_timeout_s * 1000)}"
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_s,
        pool_recycle=pool_recycle_s,
        pool_pre_ping=pool_pre_ping,
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
    )


def private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) if absent, itself owner-only (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _create_private_file(path: Path) -> None:
    """Create an empty ``path`` with mode 0600 unless it exists (SQLite takes it as new)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _sqlite_engine(url: str, cache_kib: int = 2048) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:" and not parsed.query.get("uri"):
        # SQLite would create the file with the umask's mode (0644): readable by every user.
        private_dir(Path(parsed.database).parent)
        _create_private_file(Path(parsed.database))
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event below emit BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _switch_to_wal(cursor)
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=FULL")
        # Negative: a size in KiB. Each pooled connection fills its cache up to this as the
        # warehouse grows, so a worker's memory rises by that much over its first hours.
        cursor.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        # Exact percentiles for the analytics cube (PostgreSQL has percentile_cont).
        dbapi_connection.create_aggregate(SQLITE_FUNCTION, 2, PercentileAggregate)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        write = conn.get_execution_options().get("imgclass_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """``PRAGMA journal_mode=WAL``, waiting out another connection doing the same.

    On a brand-new file the switch needs an exclusive lock, and SQLite answers "database
    is locked" at once rather than calling the busy handler; processes starting together
    on an empty data dir (replicas, tests) meet that. Retried for the busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def same_database(url_a: str, url_b: str) -> bool:
    """Whether two URLs name the same database (so one engine and pool can serve both)."""
    return parse_url(url_a) == parse_url(url_b)
