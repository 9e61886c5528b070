"""A throwaway database on the local PostgreSQL server (127.0.0.1:5432, trust auth).

``temporary_database()`` creates a uniquely named database, yields its
SQLAlchemy URL and drops it afterwards. When the server is not running the test
is skipped, except under CI, where that is a failure (.ci/run starts it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"


@contextmanager
def temporary_database() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(
            host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL is not running on {HOST}:{PORT}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason + " (scripts/start-services.sh starts it)")
        pytest.skip(reason)
    name = f"imgclass_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
