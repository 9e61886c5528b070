"""A throwaway database on the local PostgreSQL server (127.0.0.1:5432, user postgres).

Skipped when the server is not reachable, except under CI, where that is a failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.system import _unavailable

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def temporary_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"imgclass_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server, or no psycopg
        admin.dispose()
        _unavailable(f"PostgreSQL at 127.0.0.1:5432 is not usable: {exc}")
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
