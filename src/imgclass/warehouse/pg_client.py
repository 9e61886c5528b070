"""PostgreSQL's client programs (pg_dump, pg_restore) as backups run them.

They come from the PostgreSQL client package (Debian and Ubuntu: ``postgresql-client``;
the Docker image installs it), found on the PATH or in ``IMGCLASS_PG_BIN_DIR``. A
missing program, or one too old for the job, is a one-line ``ToolUnavailable`` naming
the package: pg_dump refuses a server of a newer major version than its own, and
pg_restore an archive from a newer pg_dump.

They connect where the engine does: the libpq parameters SQLAlchemy hands psycopg,
written as a conninfo string for ``--dbname``, without the password. Arguments are
visible to every user of the host (``ps``, ``/proc/PID/cmdline``), so the password goes
into a password file (mode 0600, in the caller's private temporary directory) that the
conninfo names with libpq's ``passfile`` parameter, the per-connection form of
``PGPASSFILE``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import make_conninfo
from sqlalchemy import Engine

from imgclass.warehouse.backup_errors import ToolUnavailable

PACKAGE = "postgresql-client"  # Debian's package with pg_dump, pg_restore and psql
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_ERROR = re.compile(r"^\S+: error: (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Program:
    name: str  # "pg_dump"
    path: str
    version: str  # "15.20"
    major: int


def find(name: str, bin_dir: Path | None = None) -> Program:
    """``name`` (pg_dump, pg_restore) and its version; ToolUnavailable if it is not there."""
    path = shutil.which(name, path=str(bin_dir) if bin_dir else None)
    if path is None:
        where = f"in {bin_dir} (IMGCLASS_PG_BIN_DIR)" if bin_dir else "on the PATH"
        raise ToolUnavailable(
            f"{name} is not installed {where}: PostgreSQL backups need PostgreSQL's client "
            f"programs (Debian/Ubuntu: apt-get install {PACKAGE})"
        )
    try:
        answer = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolUnavailable(f"{path} cannot be run ({exc}): reinstall {PACKAGE}") from exc
    match = _VERSION.search(answer.stdout)
    if answer.returncode != 0 or match is None:
        raise ToolUnavailable(
            f"{path} --version does not say which PostgreSQL it belongs to: reinstall {PACKAGE}"
        )
    version = match.group(1) + (f".{match.group(2)}" if match.group(2) else "")
    return Program(name, path, version, int(match.group(1)))


def major_of(version: str) -> int:
    """The major version in a version string: "15.20 (Debian …)" → 15, "9.6.24" → 9."""
    return int(re.match(r"\d+", version.strip()).group(0))


def _newer_client(major: int) -> str:
    return (
        f"install {PACKAGE}-{major} or newer (PostgreSQL's own apt repository has the majors "
        f"your distribution lacks), or set IMGCLASS_PG_BIN_DIR to the bin directory of one"
    )


def require_dump_of(pg_dump: Program, server_version: str) -> None:
    """pg_dump dumps servers of its own major version and older ones, never newer ones."""
    server_major = major_of(server_version)
    if pg_dump.major < server_major:
        raise ToolUnavailable(
            f"pg_dump {pg_dump.version} is older than the PostgreSQL {server_version.split()[0]} "
            f"server and cannot dump it: {_newer_client(server_major)}"
        )


def require_restore_of(pg_restore: Program, dumped_by: str) -> None:
    """pg_restore reads archives of pg_dump of its own major version and older ones."""
    dump_major = major_of(dumped_by)
    if pg_restore.major < dump_major:
        raise ToolUnavailable(
            f"pg_restore {pg_restore.version} cannot read an archive written by pg_dump "
            f"{dumped_by}: {_newer_client(dump_major)}"
        )


def dbname_argument(engine: Engine, workdir: Path, database: str | None = None) -> str:
    """``--dbname=<conninfo>`` for the engine's server (and ``database``, if given).

    The password, if the URL has one, is written to ``workdir/pgpass`` (0600) and only
    that file's name is in the conninfo. ``workdir`` must be private to this process
    and removed afterwards (a ``TemporaryDirectory``).
    """
    url = engine.url if database is None else engine.url.set(database=database)
    _args, params = engine.dialect.create_connect_args(url)
    # The parameters psycopg gets, minus psycopg's own objects (its adapters map).
    libpq = {k: v for k, v in params.items() if isinstance(v, str | int)}
    password = libpq.pop("password", None)
    if password:
        passfile = workdir / "pgpass"
        escaped = str(password).replace("\\", "\\\\").replace(":", "\\:")
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"*:*:*:*:{escaped}\n")  # any host, port, database, user: this one
        libpq["passfile"] = str(passfile)
    return "--dbname=" + make_conninfo("", **libpq)


def error_line(stderr: str, fallback: str) -> str:
    """The first error a client program printed, on one line, without the program's name."""
    match = _ERROR.search(stderr)
    text = match.group(1) if match else (stderr.strip().splitlines() or [fallback])[0]
    return text.strip()[:300]
