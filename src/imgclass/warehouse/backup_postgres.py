"""Backups of a PostgreSQL warehouse: pg_dump, in the snapshot its manifest was counted in.

Same names, stores, manifest and retention as the SQLite backups (backup.py); the data
object is a pg_dump custom-format archive compressed by our codec (``….pgdump.zst``),
and ``Backups`` (backup.py) calls this module when the configured database, or for
``verify`` the manifest, is PostgreSQL.

**Why pg_dump with an exported snapshot.** pg_dump is PostgreSQL's own logical backup:
online (it reads in one REPEATABLE READ transaction while the service keeps writing),
restorable by pg_restore in one transaction, into another server or a newer version.
A physical copy (pg_basebackup) needs a replication connection and the same major
version, and takes every database of the cluster. The manifest's row counts must
describe exactly what the archive holds, so they are taken in the dump's own snapshot:
our transaction (REPEATABLE READ, read only) takes the backup lock, exports its
snapshot (``pg_export_snapshot()``), counts every table in it and stays open while
``pg_dump --snapshot`` reads the same snapshot. Counts from another transaction,
before or after the dump, would race the service's writes. pg_dump writes the archive
uncompressed to a pipe, and the codec compresses it as it arrives (zstd, both
checksums in the same pass): no uncompressed copy on disk, and one compression for
both backends.

*One at a time*, per database and across hosts (the API on one replica, a CronJob on
another): a transaction-scoped advisory lock, taken without waiting.

*verify*: checksums and decompression; ``pg_restore --list`` must read the archive's
table of contents and find every table the manifest counts; then, when the configured
server's role may create databases, a trial restore into a scratch database, whose
row counts must equal the manifest's; the scratch database is dropped. Without a
server, or without CREATEDB, the record says that the counts were not checked.

*restore* into the configured database: refused while a running imgclass is connected
(its cached dimension keys would point at replaced rows), when the database holds data
and ``--force`` is not given (the SQLite rule), and when it has tables the archive
lacks (a newer schema: ``--clean`` drops only the archive's objects). ``pg_restore
--single-transaction --clean --if-exists``: the archive's objects are dropped and
recreated in one transaction, so a restore that fails changes nothing; ``--no-owner
--no-privileges``: they belong to the configured role, whoever owned them at the
source. Then every table's row count is compared with the manifest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from imgclass.warehouse import pg_client
from imgclass.warehouse.backup import (
    MANIFEST_SUFFIX,
    FileDigest,
    Manifest,
    backup_name,
    data_suffix,
    record_verification,
    unpack,
)
from imgclass.warehouse.backup_codec import Compression, Digest, compress_stream
from imgclass.warehouse.backup_errors import (
    BackupCorrupt,
    BackupError,
    BackupInProgress,
    DatabaseUnavailable,
    RestoreRefused,
)
from imgclass.warehouse.backup_store import BackupStore
from imgclass.warehouse.schema import backup_receipt
from imgclass.warehouse.transfer import rows_seeded_by_migrations

log = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key (a bigint), distinct from the migrations' (b"imgclass").
BACKUP_LOCK_KEY = int.from_bytes(b"imgc-bkp")
# Tables whose rows are no warehouse data: restoring over them needs no --force.
NOT_DATA = frozenset({"alembic_version", "service_heartbeat", "backup_receipt"})
SCRATCH_PREFIX = "imgclass_verify_"

_USER_RELATIONS = """
    SELECT n.nspname, c.relname, n.nspname = current_schema()
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ({kinds}) AND NOT c.relispartition
      AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
    ORDER BY 1, 2
"""
_TABLES = text(_USER_RELATIONS.format(kinds="'r', 'p'"))
_RELATIONS = text(_USER_RELATIONS.format(kinds="'r', 'p', 'v', 'm', 'f'"))
# Lines of `pg_restore --list`: "3343; 0 23144 TABLE DATA public api_event_fact imgclass".
_TOC_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+)", re.MULTILINE)
_TOC_RELATION = re.compile(
    r"^\d+; \d+ \d+ (?:TABLE|VIEW|MATERIALIZED VIEW|FOREIGN TABLE) (?!DATA )(\S+) (\S+)",
    re.MULTILINE,
)


def describe(url: URL) -> str:
    """A database for messages, without credentials: "PostgreSQL database X on host:port"."""
    host = url.host or url.query.get("host") or "the local socket"
    if not isinstance(host, str):
        host = ",".join(host)
    port = f":{url.port}" if url.port else ""
    return f"PostgreSQL database {url.database} on {host}{port}"


@contextlib.contextmanager
def _database_errors(engine: Engine) -> Iterator[None]:
    """A server that cannot be reached, or refuses, is one line naming the database."""
    try:
        yield
    except OperationalError as exc:
        raise DatabaseUnavailable(f"{describe(engine.url)}: {_first_line(exc)}") from exc
    except DBAPIError as exc:
        raise BackupError(f"{describe(engine.url)}: {_first_line(exc)}") from exc


def _first_line(exc: DBAPIError) -> str:
    lines = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _key(schema: str, table: str, current: bool) -> str:
    # The warehouse's own schema needs no prefix: the same keys as a SQLite manifest.
    return table if current else f"{schema}.{table}"


def count_tables(conn: Connection) -> dict[str, int]:
    """Rows of every table in the database's own schemas, in this transaction's snapshot."""
    quote = conn.dialect.identifier_preparer.quote_identifier
    counts = {}
    for schema, table, current in conn.execute(_TABLES):
        query = f"SELECT count(*) FROM {quote(schema)}.{quote(table)}"
        counts[_key(schema, table, current)] = conn.execute(text(query)).scalar_one()
    return counts


def data_in(conn: Connection) -> dict[str, int]:
    """Tables holding rows that no migration put there (a fresh install holds none)."""
    seeded = rows_seeded_by_migrations()
    return {
        table: rows
        for table, rows in count_tables(conn).items()
        if table not in NOT_DATA and rows > seeded.get(table, 0)
    }


def _private_file(path: Path) -> Path:
    """Create ``path`` empty and owner-only (0600), for a dump of the warehouse."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path


# -- create ------------------------------------------------------------------------------


def create_backup(
    engine: Engine,
    store: BackupStore,
    *,
    compression: Compression = "zstd",
    now: datetime | None = None,
    staging_dir: Path | None = None,
    bin_dir: Path | None = None,
) -> Manifest:
    """Back up the engine's PostgreSQL database into ``store``; returns the manifest.

    Safe while the service writes: every transaction committed before the manifest's
    ``created_at`` is in the backup, and its row counts are the archive's.
    """
    pg_dump = pg_client.find("pg_dump", bin_dir)
    created_at = (now or datetime.now(UTC)).astimezone(UTC)
    name = backup_name(created_at)
    if store.exists(name + MANIFEST_SUFFIX):
        raise BackupError(f"a backup named {name} already exists in {store.description}")
    data_name = name + data_suffix("postgresql", compression)
    with (
        tempfile.TemporaryDirectory(dir=staging_dir, prefix=".imgclass-backup-") as tmp,
        _database_errors(engine),
        engine.connect() as conn,
    ):
        work = Path(tmp)
        conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            # The snapshot is taken by the first statement, after created_at.
            locked = conn.execute(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": BACKUP_LOCK_KEY}
            ).scalar_one()
            if not locked:
                raise BackupInProgress(f"a backup of {describe(engine.url)} is already running")
            # This transaction idles while pg_dump works: no session limit may end it.
            conn.execute(text("SET LOCAL statement_timeout = 0"))
            conn.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
            server_version = conn.execute(text("SHOW server_version")).scalar_one()
            pg_client.require_dump_of(pg_dump, server_version)
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            tables = count_tables(conn)
            revision = None
            if "alembic_version" in tables:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            packed = work / data_name
            plain, squeezed = _dump(pg_dump, engine, snapshot, packed, compression, work)
        manifest = Manifest(
            name=name,
            created_at=created_at,
            backend="postgresql",
            source=engine.url.render_as_string(hide_password=True),
            tool=f"imgclass {version('imgclass')}",
            postgresql_version=server_version.split()[0],
            pg_dump_version=pg_dump.version,
            schema_revision=revision,
            compression=compression,
            file=data_name,
            compressed=FileDigest(size=squeezed.size, sha256=squeezed.sha256),
            uncompressed=FileDigest(size=plain.size, sha256=plain.sha256),
            tables=tables,
        )
        store.put(packed, data_name)
        store.write_small(name + MANIFEST_SUFFIX, manifest.model_dump_json(indent=2).encode())
    log.info("backup %s of %s written to %s", name, describe(engine.url), store.description)
    return manifest


def _dump(
    pg_dump: pg_client.Program,
    engine: Engine,
    snapshot: str,
    packed: Path,
    compression: Compression,
    work: Path,
) -> tuple[Digest, Digest]:
    """Run pg_dump in ``snapshot``, compressing its archive into ``packed`` as it comes."""
    args = [
        pg_dump.path,
        "--format=custom",
        "--compress=0",  # the codec compresses (zstd), once
        f"--snapshot={snapshot}",
        "--no-password",  # never prompt: there is no terminal in a server or a job
        pg_client.dbname_argument(engine, work),
    ]
    # stderr to a file, not a pipe: a pipe nobody reads can fill and stall pg_dump.
    with (work / "pg_dump.stderr").open("w+") as errors:
        dump = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errors)
        try:
            digests = compress_stream(dump.stdout, packed, compression)
        except BaseException:
            dump.kill()
            raise
        finally:
            dump.stdout.close()
            status = dump.wait()
        if status != 0:
            errors.seek(0)
            detail = pg_client.error_line(errors.read(), f"exit status {status}")
            raise BackupError(f"pg_dump failed: {detail}")
    return digests


def record_receipt(engine: Engine, manifest: Manifest, destination: str) -> None:
    """Note the backup in the warehouse, where every replica's metric finds it."""
    row = {
        "name": manifest.name,
        "destination": destination[:1024],
        "created_at": manifest.created_at.astimezone(UTC).replace(tzinfo=None),
    }
    try:
        with engine.begin() as conn:
            conn.execute(insert(backup_receipt).values(row).on_conflict_do_nothing())
    except SQLAlchemyError as exc:
        log.warning(
            "backup %s done, but the database did not take its receipt: %s", manifest.name, exc
        )


def last_receipt_time(engine: Engine) -> float | None:
    """Epoch seconds of the newest receipt in the warehouse (None: none, or unreachable)."""
    try:
        with engine.connect() as conn:
            newest = conn.execute(select(func.max(backup_receipt.c.created_at))).scalar()
    except SQLAlchemyError as exc:  # a scrape must not fail on it; readiness reports the DB
        log.debug("no backup receipt from the database: %s", exc)
        return None
    return newest.replace(tzinfo=UTC).timestamp() if newest is not None else None


# -- reading archives ----------------------------------------------------------------------


@dataclass(frozen=True)
class Contents:
    """What an archive's table of contents lists: (schema, name) pairs."""

    data: frozenset[tuple[str, str]]  # tables with a data entry
    relations: frozenset[tuple[str, str]]  # tables, views, materialized views


def read_contents(pg_restore: pg_client.Program, archive: Path, manifest: Manifest) -> Contents:
    """``pg_restore --list``; BackupCorrupt unless it reads and lists every counted table."""
    listing = subprocess.run(
        [pg_restore.path, "--list", str(archive)], capture_output=True, text=True, check=False
    )
    if listing.returncode != 0:
        detail = pg_client.error_line(listing.stderr, f"exit status {listing.returncode}")
        raise BackupCorrupt(f"pg_restore cannot read {manifest.file}: {detail}")
    contents = Contents(
        frozenset(_TOC_DATA.findall(listing.stdout)),
        frozenset(_TOC_RELATION.findall(listing.stdout)),
    )
    names = {t for _, t in contents.data} | {f"{s}.{t}" for s, t in contents.data}
    if missing := sorted(set(manifest.tables) - names):
        raise BackupCorrupt(
            f"{manifest.file} holds no data for tables its manifest counts: "
            + ", ".join(missing[:5])
        )
    return contents


def _pg_restore(
    pg_restore: pg_client.Program,
    engine: Engine,
    archive: Path,
    work: Path,
    *,
    database: str | None = None,
    clean: bool = False,
) -> str | None:
    """Restore ``archive`` in one transaction; None, or pg_restore's first error."""
    args = [
        pg_restore.path,
        "--single-transaction",  # all or nothing
        "--exit-on-error",
        "--no-owner",  # the restoring role owns what it creates
        "--no-privileges",  # GRANTs name roles the target server may not have
        "--no-password",
        *(["--clean", "--if-exists"] if clean else []),
        pg_client.dbname_argument(engine, work, database),
        str(archive),
    ]
    run = subprocess.run(args, capture_output=True, text=True, check=False)
    if run.returncode == 0:
        return None
    return pg_client.error_line(run.stderr, f"exit status {run.returncode}")


def _compare(found: dict[str, int], manifest: Manifest, what: str) -> None:
    if found != manifest.tables:
        diffs = [
            f"{t} {found.get(t, 'missing')} != {manifest.tables.get(t, 'missing')}"
            for t in sorted(set(found) | set(manifest.tables))
            if found.get(t) != manifest.tables.get(t)
        ]
        raise BackupCorrupt(
            f"{what}: row counts differ from the manifest (found != recorded): "
            + ", ".join(diffs[:5])
        )


def _fetch(
    store: BackupStore, manifest: Manifest, work: Path, bin_dir: Path | None
) -> tuple[pg_client.Program, Path, Contents]:
    """pg_restore, and the backup's archive checked and decompressed in ``work``."""
    pg_restore = pg_client.find("pg_restore", bin_dir)
    pg_client.require_restore_of(pg_restore, manifest.pg_dump_version or "0")
    archive = _private_file(work / "archive.pgdump")
    unpack(store, manifest, archive, work)
    return pg_restore, archive, read_contents(pg_restore, archive, manifest)


# -- verify ------------------------------------------------------------------------------


def verify_archive(
    store: BackupStore,
    manifest: Manifest,
    *,
    server: Engine | None,
    staging_dir: Path | None = None,
    bin_dir: Path | None = None,
) -> str:
    """Check a PostgreSQL backup (see the module docstring); what was checked, in words.

    Raises BackupCorrupt when a check fails.
    """
    with tempfile.TemporaryDirectory(dir=staging_dir, prefix=".imgclass-verify-") as tmp:
        work = Path(tmp)
        pg_restore, archive, contents = _fetch(store, manifest, work, bin_dir)
        checked = f"checksums match, pg_restore reads the archive ({len(contents.data)} tables)"
        if server is None:
            return (
                f"{checked}; not restored, so row counts not checked: the configured "
                "database is not PostgreSQL"
            )
        with _database_errors(server):
            with server.connect() as conn:
                role, may_create = conn.execute(
                    text(
                        "SELECT current_user, rolcreatedb OR rolsuper FROM pg_roles "
                        "WHERE rolname = current_user"
                    )
                ).one()
            if not may_create:
                return (
                    f"{checked}; not restored, so row counts not checked: role {role} may "
                    "not create databases (CREATEDB) for a trial restore"
                )
            with _scratch_database(server) as scratch:
                failed = _pg_restore(pg_restore, server, archive, work, database=scratch)
                if failed:
                    raise BackupCorrupt(f"a trial restore of {manifest.file} failed: {failed}")
                counts_engine = create_engine(
                    server.url.set(database=scratch).render_as_string(hide_password=False),
                    poolclass=NullPool,
                )
                try:
                    with counts_engine.connect() as conn:
                        found = count_tables(conn)
                finally:
                    counts_engine.dispose()
    _compare(found, manifest, f"a trial restore of {manifest.name}")
    return (
        f"{checked}, and a trial restore into a scratch database has the recorded row "
        f"counts in all {len(found)} tables"
    )


@contextlib.contextmanager
def _scratch_database(server: Engine) -> Iterator[str]:
    """A new, empty database on ``server`` for the duration; dropped afterwards."""
    name = SCRATCH_PREFIX + secrets.token_hex(6)
    with server.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        yield name
    finally:
        with server.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            force = " WITH (FORCE)" if conn.dialect.server_version_info >= (13,) else ""
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"{force}'))


# -- restore -----------------------------------------------------------------------------


def restore_backup(
    store: BackupStore,
    manifest: Manifest,
    engine: Engine,
    *,
    force: bool = False,
    staging_dir: Path | None = None,
    bin_dir: Path | None = None,
) -> Manifest:
    """Make the engine's database what backup ``manifest`` holds (see the module docstring)."""
    target = describe(engine.url)
    with (
        tempfile.TemporaryDirectory(dir=staging_dir, prefix=".imgclass-restore-") as tmp,
        _database_errors(engine),
    ):
        work = Path(tmp)
        with engine.connect() as conn:
            if (found := data_in(conn)) and not force:
                # The events first: the table an operator recognises.
                shown = sorted(found.items(), key=lambda tn: (tn[0] != "api_event_fact", tn[0]))
                listing = ", ".join(f"{t}: {n:,} rows" for t, n in shown[:3])
                listing += ", …" if len(shown) > 3 else ""
                raise RestoreRefused(
                    f"{target} holds data ({listing}); pass --force to replace it with "
                    f"{manifest.name} (stop the server first)"
                )
            _refuse_while_served(conn, target)
        try:
            pg_restore, archive, contents = _fetch(store, manifest, work, bin_dir)
        except BackupCorrupt as exc:
            record_verification(store, manifest.name, False, exc.message)
            raise
        with engine.connect() as conn:
            extra = [
                _key(schema, name, current)
                for schema, name, current in conn.execute(_RELATIONS)
                if (schema, name) not in contents.relations
            ]
        if extra:
            raise RestoreRefused(
                f"{target} has tables that {manifest.name} lacks ({', '.join(extra[:5])}), "
                f"probably from a newer schema than the backup's {manifest.schema_revision}: "
                "a restore would leave them; empty the database (DROP SCHEMA public CASCADE; "
                "CREATE SCHEMA public;), then restore"
            )
        failed = _pg_restore(pg_restore, engine, archive, work, clean=True)
        if failed:
            raise BackupError(f"pg_restore failed, {target} is unchanged: {failed}")
        with engine.connect() as conn:
            found = count_tables(conn)
    try:
        _compare(found, manifest, f"restored {target}")
    except BackupCorrupt as exc:
        record_verification(store, manifest.name, False, exc.message)
        raise
    record_verification(store, manifest.name, True, f"restored to {target}; row counts ok")
    log.info("restored %s from %s to %s", manifest.name, store.description, target)
    return manifest


def _refuse_while_served(conn: Connection, target: str) -> None:
    """Refuse while another imgclass process is connected: stop the servers first."""
    serving = conn.execute(
        text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND application_name = 'imgclass'"
        )
    ).scalar_one()
    if serving:
        raise RestoreRefused(
            f"{target} is in use by {serving} connection(s) of imgclass (a running server?): "
            "stop every server, then restore"
        )
