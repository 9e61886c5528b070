"""Run tests against both database backends: SQLite and a real PostgreSQL (pytest plugin).

A test, class or module marked ``backends`` runs once per backend (ids ``[sqlite]``
and ``[postgresql]``), and its database fixtures follow:

    pytestmark = pytest.mark.backends          # the whole module, on both backends

    def test_x(database_url): ...              # a fresh, migrated database (URL)
    def test_y(db_engine): ...                 # an engine on it
    def test_z(app, client): ...               # the app's settings point at it too

Unmarked tests run on SQLite only. ``--db-backend sqlite|postgresql`` narrows the
marked tests to one backend; ``-m "not postgresql"`` deselects the PostgreSQL runs.
``postgres_url`` is a fresh migrated PostgreSQL database for tests that only make
sense there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import upgrade
from tests.support.postgres import SessionDatabase, open_session_database

BACKENDS = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db-backend",
        choices=("both", *BACKENDS),
        default="both",
        help="database backends for tests marked 'backends' (default: both)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends: run the test on every database backend (SQLite and PostgreSQL)"
    )
    config.addinivalue_line("markers", "postgresql: the test needs the local PostgreSQL server")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_backend" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("backends") is None:
        return
    chosen = metafunc.config.getoption("--db-backend")
    backends = BACKENDS if chosen == "both" else (chosen,)
    metafunc.parametrize(
        "database_backend",
        [
            pytest.param(b, marks=(pytest.mark.postgresql,) if b == "postgresql" else ())
            for b in backends
        ],
        indirect=True,
    )


@pytest.fixture
def database_backend(request) -> str:
    """``sqlite`` or ``postgresql``: the backend this test runs on (SQLite unless marked)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[SessionDatabase]:
    """This session's throwaway database (skips, or fails under CI, without a server)."""
    database = open_session_database()
    yield database
    database.drop()


@pytest.fixture
def fresh_postgres(postgres_database: SessionDatabase) -> str:
    """URL of the session database, emptied for this test (no tables at all)."""
    postgres_database.reset(migrated=False)
    return postgres_database.url


@pytest.fixture
def postgres_url(postgres_database: SessionDatabase) -> str:
    """URL of the session database in a fresh install's state: migrated, seeded, no data."""
    postgres_database.reset(migrated=True)
    return postgres_database.url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A SQLite file migrated once per session; tests get copies."""
    path = tmp_path_factory.mktemp("sqlite-template") / "imgclass.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def empty_database_url(database_backend: str, tmp_path, request) -> str:
    """URL of a database with no tables yet, on this test's backend."""
    if database_backend == "postgresql":
        return request.getfixturevalue("fresh_postgres")
    return f"sqlite:///{tmp_path / 'data' / 'imgclass.db'}"


@pytest.fixture
def database_url(database_backend: str, tmp_path, request) -> str:
    """URL of a fresh database in a fresh install's state, on this test's backend.

    On SQLite it is the file the ``settings`` fixture uses (``<tmp>/data/imgclass.db``),
    on PostgreSQL the database ``settings`` points at: a test that also uses ``app``
    sees the app's database. (Use it or ``empty_database_url``, not both.)
    """
    if database_backend == "postgresql":
        return request.getfixturevalue("postgres_url")
    target = tmp_path / "data" / "imgclass.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    template = request.getfixturevalue("sqlite_template")
    # The backup API copies a consistent image whatever the journal state of the file.
    with sqlite3.connect(template) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    return f"sqlite:///{target}"


@pytest.fixture
def db_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()
