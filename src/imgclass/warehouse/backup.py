"""Online backups of the warehouse: create, list, verify, restore, prune.

A backup is two objects in a store (a directory or an S3 prefix, see backup_store.py):

    imgclass-20261125T143210.123456Z.db.zst   the database, compressed (SQLite)
    imgclass-20261125T143210.123456Z.json     its manifest: checksums, row counts, schema

Names sort by creation time (UTC). The manifest is written last, so a backup exists
exactly when its manifest does. ``verify`` also leaves ``NAME.verify.json`` (when, and the
outcome), which ``list`` shows.

**Why the backup API.** The snapshot is taken with SQLite's online backup API through the
engine's own DB-API connection (``sqlite3.Connection.backup``), copying every page in
one step. One step is one read transaction: in WAL mode it sees exactly the transactions
committed before it began and never blocks the writers, which keep committing to the WAL
meanwhile. ``VACUUM INTO`` gives the same consistency, but rebuilds every table and
index while the service runs (more CPU on a 2-core host for a smaller file), and the size
it saves is mostly free pages that compress to almost nothing anyway.

A PostgreSQL warehouse is backed up as a pg_dump archive (``….pgdump.zst``) with the
same naming, manifest, stores and retention: ``backup_postgres.py``. ``Backups`` picks
the module from the configured database, and ``verify`` from the manifest's backend.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from imgclass.warehouse.backup_codec import (
    DATA_SUFFIXES,
    PG_SUFFIX,
    SUFFIX,
    Compression,
    compress,
    decompress,
    file_digest,
)
from imgclass.warehouse.backup_errors import (
    BackupCorrupt,
    BackupError,
    BackupInProgress,
    BackupNotFound,
    BackupUnsupported,
    DestinationUnavailable,
    RestoreRefused,
)
from imgclass.warehouse.backup_retention import RetentionPolicy, plan_retention
from imgclass.warehouse.backup_store import BackupStore, LocalStore, open_store

if TYPE_CHECKING:
    from imgclass.config import Settings

log = logging.getLogger(__name__)

PREFIX = "imgclass-"
_STAMP = "%Y%m%dT%H%M%S.%fZ"
NAME_RE = re.compile(r"^imgclass-(\d{8}T\d{6}\.\d{6}Z)$")
_MANIFEST_FILE = re.compile(r"^(imgclass-\d{8}T\d{6}\.\d{6}Z)\.json$")
_DATA_FILE = re.compile(r"^(imgclass-\d{8}T\d{6}\.\d{6}Z)(\..+)$")
MANIFEST_SUFFIX = ".json"
VERIFY_SUFFIX = ".verify.json"
MAX_MANIFEST_BYTES = 1024 * 1024  # a real one is about 1 KB
LATEST = "latest"  # accepted wherever a backup name is
RECEIPT_FILE = "last-backup.json"  # in the data dir: this host's last successful backup


# -- names and manifests ------------------------------------------------------------


def backup_name(created_at: datetime) -> str:
    return PREFIX + created_at.astimezone(UTC).strftime(_STAMP)


def name_time(name: str) -> datetime:
    """The creation time encoded in a backup name."""
    match = NAME_RE.match(name)
    if not match:
        raise ValueError(f"not a backup name: {name!r}")
    return datetime.strptime(match.group(1), _STAMP).replace(tzinfo=UTC)


def normalize_name(text: str) -> str:
    """A backup name from what a person may paste: the name, or one of its file names."""
    text = text.strip().rsplit("/", 1)[-1]
    for suffix in (VERIFY_SUFFIX, MANIFEST_SUFFIX, *DATA_SUFFIXES):
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


class FileDigest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


Backend = Literal["sqlite", "postgresql"]


def data_suffix(backend: Backend, compression: Compression) -> str:
    """The data object's suffix: ``.db.zst`` (SQLite file) or ``.pgdump.zst`` (pg_dump archive)."""
    return (PG_SUFFIX if backend == "postgresql" else SUFFIX)[compression]


class Manifest(BaseModel):
    """What a backup holds and how to check it. Read back from storage, so validated."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: Literal[1] = 1
    name: str = Field(pattern=NAME_RE.pattern)
    created_at: datetime  # UTC; every transaction committed before this is in the backup
    backend: Backend = "sqlite"  # manifests written before PostgreSQL backups are SQLite's
    source: str  # the database file, or the PostgreSQL URL without its password
    tool: str  # "imgclass <version>"
    sqlite_version: str | None = None  # SQLite backups
    postgresql_version: str | None = None  # PostgreSQL backups: the server's version
    pg_dump_version: str | None = None  # …and the pg_dump that wrote the archive
    schema_revision: str | None  # Alembic revision of the backed-up schema
    compression: Compression
    file: str  # the data object's name, next to the manifest
    compressed: FileDigest
    uncompressed: FileDigest
    tables: dict[str, int]  # row count per table, at backup time
    quick_check: str | None = None  # SQLite: PRAGMA quick_check of the snapshot ("ok")

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        # The data file name is derived, never trusted: a manifest from a bucket must
        # not be able to point a restore at another object or path.
        if self.file != self.name + data_suffix(self.backend, self.compression):
            raise ValueError(f"file {self.file!r} does not belong to backup {self.name!r}")
        needed = ("sqlite_version", "quick_check")
        if self.backend == "postgresql":
            needed = ("postgresql_version", "pg_dump_version")
        if missing := [f for f in needed if getattr(self, f) is None]:
            raise ValueError(f"a {self.backend} backup's manifest needs {', '.join(missing)}")
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must carry a time zone")
        return self

    @property
    def events(self) -> int:
        return self.tables.get("api_event_fact", 0)

    def to_json(self) -> dict:
        return self.model_dump(mode="json")


class Verification(BaseModel):
    """The outcome of the last ``verify`` (or restore) of a backup."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str = Field(pattern=NAME_RE.pattern)
    verified_at: datetime
    ok: bool
    message: str = Field(max_length=1000)


class Receipt(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str
    destination: str
    created_at: datetime


@dataclass(frozen=True)
class BackupEntry:
    manifest: Manifest
    verification: Verification | None

    def to_json(self) -> dict:
        return {
            **self.manifest.to_json(),
            "verification": self.verification.model_dump(mode="json")
            if self.verification
            else None,
        }


@dataclass(frozen=True)
class PruneResult:
    kept: dict[str, list[str]]  # name -> reasons
    deleted: list[str] = field(default_factory=list)


# -- SQLite --------------------------------------------------------------------------


def database_backend(url: str) -> Backend:
    """Which kind of backup the database at ``url`` gets; BackupUnsupported for others."""
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupUnsupported(
            f"imgclass backs up SQLite and PostgreSQL warehouses; this database is {backend}"
        )
    return backend


def sqlite_path(url: str) -> Path:
    """The database file behind a SQLAlchemy URL; BackupUnsupported for anything else."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend != "sqlite":
        raise BackupUnsupported(f"this database is {backend}, not a SQLite file")
    if not parsed.database or parsed.database == ":memory:":
        raise BackupUnsupported("an in-memory SQLite database cannot be backed up")
    return Path(parsed.database).expanduser().resolve()


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class DatabaseFacts:
    check: str  # "ok", or the first problems integrity_check/quick_check found
    tables: dict[str, int]
    schema_revision: str | None


def _one_line(problems: list) -> str:
    """integrity_check's rows (which hold newlines) as one short line for a person."""
    lines = [
        line.strip()
        for problem in problems
        for line in str(problem).splitlines()
        if line.strip() and not line.startswith("*** in database")
    ]
    return "; ".join(lines[:3]) + (" (and more)" if len(lines) > 3 else "")


def inspect_database(path: Path, *, full: bool) -> DatabaseFacts:
    """Integrity (``integrity_check`` + foreign keys if ``full``, else ``quick_check``),
    row counts and schema revision of a database file, opened read-only."""
    try:
        con = _read_only(path)
        try:
            pragma = "integrity_check" if full else "quick_check"
            problems = [row[0] for row in con.execute(f"PRAGMA {pragma}(10)")]
            check = "ok" if problems == ["ok"] else _one_line(problems)
            if full and check == "ok":
                violations = con.execute("PRAGMA foreign_key_check").fetchmany(5)
                if violations:
                    first = violations[0]
                    check = f"foreign key violations, first in table {first[0]} row {first[1]}"
            names = [
                row[0]
                for row in con.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            tables = {
                n: con.execute(f"SELECT COUNT(*) FROM {_quoted(n)}").fetchone()[0] for n in names
            }
            revision = None
            if "alembic_version" in tables:
                row = con.execute("SELECT version_num FROM alembic_version").fetchone()
                revision = row[0] if row else None
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise BackupCorrupt(f"{path.name} is not a readable SQLite database: {exc}") from exc
    return DatabaseFacts(check, tables, revision)


def check_against(path: Path, manifest: Manifest, what: str) -> None:
    """integrity_check == ok and every table's row count as the manifest records."""
    facts = inspect_database(path, full=True)
    if facts.check != "ok":
        raise BackupCorrupt(f"{what}: integrity_check failed: {facts.check}")
    if facts.tables != manifest.tables:
        diffs = [
            f"{t} {facts.tables.get(t, 'missing')} != {manifest.tables.get(t, 'missing')}"
            for t in sorted(set(facts.tables) | set(manifest.tables))
            if facts.tables.get(t) != manifest.tables.get(t)
        ]
        raise BackupCorrupt(
            f"{what}: row counts differ from the manifest (found != recorded): "
            + ", ".join(diffs[:5])
        )


def snapshot_database(engine: Engine, target: Path) -> None:
    """Copy the live database into ``target`` with the backup API, in one step."""
    raw = engine.raw_connection()
    try:
        dest = sqlite3.connect(target)
        try:
            # pages=-1: all pages in a single step, i.e. inside one read transaction,
            # so the copy is one consistent point in time (see the module docstring).
            raw.driver_connection.backup(dest, pages=-1)
            # The copy inherits WAL mode from the live file's header; a backup is a
            # single self-contained file, so switch it to a rollback journal.
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()
    finally:
        raw.close()


@contextlib.contextmanager
def _exclusive(lock_path: Path, what: str) -> Iterator[None]:
    """One backup of a database at a time (across processes on this host)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BackupInProgress(f"a backup of {what} is already running") from exc
        yield
    finally:
        os.close(fd)


# -- operations on a store ------------------------------------------------------------


def create_backup(
    engine: Engine,
    store: BackupStore,
    *,
    compression: Compression = "zstd",
    now: datetime | None = None,
) -> Manifest:
    """Back up the engine's SQLite database into ``store``; returns the manifest.

    Safe while the service writes: every transaction committed before the manifest's
    ``created_at`` is in the backup. ``now`` overrides the creation time (tests).
    """
    source = sqlite_path(engine.url.render_as_string(hide_password=False))
    if not source.is_file():
        raise BackupError(f"no database at {source}: nothing to back up")
    lock = source.parent / f".{source.name}.backup-lock"
    with (
        _exclusive(lock, str(source)),
        tempfile.TemporaryDirectory(dir=source.parent, prefix=".imgclass-backup-") as tmp,
    ):
        created_at = (now or datetime.now(UTC)).astimezone(UTC)
        name = backup_name(created_at)
        if store.exists(name + MANIFEST_SUFFIX):
            raise BackupError(f"a backup named {name} already exists in {store.description}")
        snapshot = Path(tmp) / "snapshot.db"
        snapshot_database(engine, snapshot)
        facts = inspect_database(snapshot, full=False)
        if facts.check != "ok":
            raise BackupCorrupt(
                f"the live database {source} fails PRAGMA quick_check ({facts.check}); "
                "not backing it up: restore the last good backup"
            )
        data_name = name + SUFFIX[compression]
        packed = Path(tmp) / data_name
        plain, squeezed = compress(snapshot, packed, compression)
        manifest = Manifest(
            name=name,
            created_at=created_at,
            source=str(source),
            tool=f"imgclass {version('imgclass')}",
            sqlite_version=sqlite3.sqlite_version,
            schema_revision=facts.schema_revision,
            compression=compression,
            file=data_name,
            compressed=FileDigest(size=squeezed.size, sha256=squeezed.sha256),
            uncompressed=FileDigest(size=plain.size, sha256=plain.sha256),
            tables=facts.tables,
            quick_check=facts.check,
        )
        store.put(packed, data_name)
        store.write_small(name + MANIFEST_SUFFIX, manifest.model_dump_json(indent=2).encode())
    log.info("backup %s of %s written to %s", name, source, store.description)
    return manifest


def backup_names(store: BackupStore, objects: list[str] | None = None) -> list[str]:
    """Names of the complete backups in ``store`` (those with a manifest), oldest first."""
    if objects is None:
        objects = store.names()
    return sorted(m.group(1) for n in objects if (m := _MANIFEST_FILE.match(n)))


def incomplete_backups(store: BackupStore, objects: list[str] | None = None) -> list[str]:
    """Names of backups whose data file has no manifest, newest first.

    Either still being written (the manifest comes last) or its manifest was deleted: it
    cannot be verified or restored, and ``latest`` means the newest backup that can.
    """
    if objects is None:
        objects = store.names()
    complete = set(backup_names(store, objects))
    data = {
        m.group(1) for n in objects if (m := _DATA_FILE.match(n)) and m.group(2) in DATA_SUFFIXES
    }
    return sorted(data - complete, reverse=True)


def load_manifest(store: BackupStore, name: str | None = None) -> Manifest:
    """The manifest of backup ``name`` (the newest one when None or "latest")."""
    if name is None or name.strip() == LATEST:
        names = backup_names(store)
        if not names:
            raise BackupNotFound(f"there are no backups in {store.description}")
        name = names[-1]
    name = normalize_name(name)
    if not NAME_RE.match(name):
        raise BackupNotFound(
            f"{name[:80]!r} is not a backup name (like imgclass-20261125T143210.123456Z); "
            "`imgclass backup list` shows them"
        )
    try:
        raw = store.read_small(name + MANIFEST_SUFFIX, MAX_MANIFEST_BYTES)
    except BackupNotFound:
        raise BackupNotFound(f"no backup named {name} in {store.description}") from None
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "manifest"
        raise BackupCorrupt(
            f"the manifest of {name} is not valid ({where}: {first['msg']})"
        ) from exc
    if manifest.name != name:
        raise BackupCorrupt(f"the manifest {name}.json describes another backup, {manifest.name}")
    return manifest


def _verification(store: BackupStore, name: str) -> Verification | None:
    try:
        return Verification.model_validate_json(store.read_small(name + VERIFY_SUFFIX, 4096))
    except (BackupNotFound, BackupCorrupt, ValidationError):
        return None


def list_backups(store: BackupStore) -> list[BackupEntry]:
    """Every complete backup, newest first, with its last verification."""
    objects = store.names()
    present = set(objects)
    entries = []
    for name in reversed(backup_names(store, objects)):
        try:
            manifest = load_manifest(store, name)
        except BackupCorrupt as exc:
            log.warning("skipping backup %s: %s", name, exc.message)
            continue
        verified = _verification(store, name) if name + VERIFY_SUFFIX in present else None
        entries.append(BackupEntry(manifest, verified))
    return entries


def record_verification(store: BackupStore, name: str, ok: bool, message: str) -> Verification:
    """Keep the outcome of a check next to the backup (``list`` shows it); the record."""
    record = Verification(name=name, verified_at=datetime.now(UTC), ok=ok, message=message[:1000])
    try:
        store.write_small(name + VERIFY_SUFFIX, record.model_dump_json().encode())
    except DestinationUnavailable as exc:  # e.g. read-only credentials: the check still stands
        log.warning("could not record the verification of %s: %s", name, exc.message)
    return record


def unpack(store: BackupStore, manifest: Manifest, target: Path, staging: Path | None) -> None:
    """Fetch, check the compressed checksum, decompress into ``target``, check that too."""
    with store.fetch(manifest.file, staging) as packed:
        size = packed.stat().st_size
        if size != manifest.compressed.size:
            raise BackupCorrupt(
                f"{manifest.file} is {size} bytes, the manifest says {manifest.compressed.size}"
            )
        actual = file_digest(packed).sha256
        if actual != manifest.compressed.sha256:
            raise BackupCorrupt(
                f"checksum mismatch: {manifest.file} has sha256 {actual[:16]}…, "
                f"the manifest says {manifest.compressed.sha256[:16]}…"
            )
        with target.open("wb") as out:
            plain = decompress(packed, out, manifest.compression, manifest.uncompressed.size)
            out.flush()
            os.fsync(out.fileno())
    if plain.sha256 != manifest.uncompressed.sha256 or plain.size != manifest.uncompressed.size:
        raise BackupCorrupt(
            f"checksum mismatch: {manifest.file} decompresses to data whose sha256 differs "
            "from the manifest's"
        )


def check_backup(
    store: BackupStore,
    name: str | None = None,
    *,
    staging_dir: Path | None = None,
    server: Engine | None = None,
    pg_bin_dir: Path | None = None,
) -> tuple[Manifest, Verification]:
    """Check backup ``name`` (the newest when None) and record the outcome next to it.

    SQLite: checksums, decompression, integrity_check == ok, row counts == manifest.
    PostgreSQL (``backup_postgres.verify_archive``): checksums, ``pg_restore --list``,
    and a trial restore on ``server`` whose row counts must equal the manifest's, when
    there is a server and its role may create databases; the record says which.
    Raises BackupCorrupt (recorded too) when a check fails.
    """
    manifest = load_manifest(store, name)
    try:
        if manifest.backend == "postgresql":
            from imgclass.warehouse import backup_postgres

            message = backup_postgres.verify_archive(
                store, manifest, server=server, staging_dir=staging_dir, bin_dir=pg_bin_dir
            )
        else:
            with tempfile.TemporaryDirectory(dir=staging_dir, prefix=".imgclass-verify-") as tmp:
                restored = Path(tmp) / "verify.db"
                unpack(store, manifest, restored, Path(tmp))
                check_against(restored, manifest, manifest.name)
            message = (
                f"checksums match, integrity_check ok, {len(manifest.tables)} tables with "
                "the recorded row counts"
            )
    except BackupCorrupt as exc:
        record_verification(store, manifest.name, False, exc.message)
        raise
    return manifest, record_verification(store, manifest.name, True, message)


def verify_backup(
    store: BackupStore,
    name: str | None = None,
    *,
    staging_dir: Path | None = None,
    server: Engine | None = None,
    pg_bin_dir: Path | None = None,
) -> Manifest:
    """``check_backup``'s manifest: returns when every check holds, else BackupCorrupt."""
    return check_backup(store, name, staging_dir=staging_dir, server=server, pg_bin_dir=pg_bin_dir)[
        0
    ]


def _drop_side_files(db: Path) -> None:
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def _quiesced(target: Path) -> Iterator[None]:
    """Hold ``target`` exclusively, its WAL folded in and gone, or refuse: it is in use.

    Replacing a database that a running server has open would leave that server writing
    to the unlinked old file (acknowledged requests lost) and pair a stale -wal with the
    new file. An exclusive lock taken without waiting proves nobody has it open; switching
    to a rollback journal checkpoints and removes the old -wal/-shm.
    """
    if not target.exists():
        yield
        return
    con = sqlite3.connect(target, timeout=0, isolation_level=None)
    try:
        try:
            con.execute("PRAGMA locking_mode=EXCLUSIVE")
            con.execute("BEGIN EXCLUSIVE")
            con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            con.execute("COMMIT")
            con.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise RestoreRefused(
                    f"{target} is open by another process (a running server?): stop it, "
                    "then restore"
                ) from exc
            log.warning("restoring over %s, which SQLite cannot read: %s", target, exc)
        except sqlite3.DatabaseError as exc:  # not a database any more: nothing to protect
            log.warning("restoring over %s, which SQLite cannot read: %s", target, exc)
        yield
    finally:
        con.close()


def restore_backup(store: BackupStore, name: str, target: Path, *, force: bool = False) -> Manifest:
    """Verify backup ``name`` and make it the database at ``target``.

    Refuses to replace an existing database unless ``force``, and always refuses one
    that another process has open. The restored file is written next to the target and
    renamed over it (atomic), stale -wal/-shm files of the old database are removed, and
    integrity and row counts are checked again on the file in place.
    """
    target = target.expanduser().resolve()
    manifest = load_manifest(store, name)
    if target.exists() and not force:
        raise RestoreRefused(
            f"{target} exists; pass --force to replace it with {manifest.name} "
            "(stop the server first)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.restore-")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            unpack(store, manifest, tmp, target.parent)
            check_against(tmp, manifest, manifest.name)
        except BackupCorrupt as exc:
            record_verification(store, manifest.name, False, exc.message)
            raise
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o600
        os.chmod(tmp, mode)
        with _quiesced(target):
            _drop_side_files(target)
            os.replace(tmp, target)
            fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        tmp.unlink(missing_ok=True)
        _drop_side_files(tmp)
    check_against(target, manifest, f"restored {target}")
    record_verification(
        store, manifest.name, True, f"restored to {target}; integrity_check and counts ok"
    )
    log.info("restored %s from %s to %s", manifest.name, store.description, target)
    return manifest


def prune_backups(
    store: BackupStore, policy: RetentionPolicy, *, dry_run: bool = False
) -> PruneResult:
    """Delete the backups the retention policy does not keep (see backup_retention.py)."""
    objects = store.names()
    present = set(objects)
    names = backup_names(store, objects)
    plan = plan_retention([(n, name_time(n)) for n in names], policy)
    kept = {n: why for n, why in plan.items() if why}
    doomed = [n for n in names if not plan[n]]
    if not dry_run:
        for name in doomed:
            # Manifest first: an interrupted prune leaves no backup that lists but is gone.
            store.delete(name + MANIFEST_SUFFIX)
            for suffix in (*DATA_SUFFIXES, VERIFY_SUFFIX):
                if name + suffix in present:
                    store.delete(name + suffix)
    return PruneResult(kept=kept, deleted=doomed)


# -- the configured service: what the CLI and the API call ----------------------------


class Backups:
    """Backups of the configured warehouse to the configured (or a given) destination."""

    def __init__(self, settings: Settings, engine: Engine | None = None):
        self.settings = settings
        self.engine = engine

    def store(self, destination: str | None = None) -> BackupStore:
        return open_store(destination or self.settings.effective_backup_destination, self.settings)

    @property
    def backend(self) -> Backend:
        """``sqlite`` or ``postgresql``: the configured database's (BackupUnsupported else)."""
        return database_backend(self.settings.effective_database_url)

    @property
    def database(self) -> Path:
        return sqlite_path(self.settings.effective_database_url)

    @property
    def target(self) -> str:
        """The configured database, for messages: its file, or its server and name."""
        if self.backend == "postgresql":
            from imgclass.warehouse.backup_postgres import describe

            return describe(make_url(self.settings.effective_database_url))
        return str(self.database)

    def _staging(self) -> Path | None:
        return self.settings.data_dir if self.settings.data_dir.is_dir() else None

    @contextlib.contextmanager
    def _engine(self) -> Iterator[Engine]:
        """The engine given to the service, or one of our own for the duration."""
        if self.engine is not None:
            yield self.engine
            return
        from imgclass.warehouse.db import make_engine

        engine = make_engine(self.settings.effective_database_url)
        try:
            yield engine
        finally:
            engine.dispose()

    def create(self, to: str | None = None, *, now: datetime | None = None) -> Manifest:
        backend = self.backend  # refuses other databases before anything else
        store = self.store(to)
        if backend == "postgresql":
            from imgclass.warehouse import backup_postgres

            with self._engine() as engine:
                manifest = backup_postgres.create_backup(
                    engine,
                    store,
                    compression=self.settings.backup_compression,
                    now=now,
                    staging_dir=self._staging(),
                    bin_dir=self.settings.pg_bin_dir,
                )
                # In the database too: every replica's metric reads it from there (the
                # data dir of a backup job, a Kubernetes CronJob's say, is thrown away).
                backup_postgres.record_receipt(engine, manifest, store.description)
            self._write_receipt(manifest, store)
            return manifest
        database = self.database
        if self.engine is not None:
            manifest = create_backup(
                self.engine, store, compression=self.settings.backup_compression, now=now
            )
        else:
            if not database.is_file():
                raise BackupError(f"no database at {database}: nothing to back up")
            from imgclass.warehouse.db import make_engine

            engine = make_engine(self.settings.effective_database_url)
            try:
                manifest = create_backup(
                    engine, store, compression=self.settings.backup_compression, now=now
                )
            finally:
                engine.dispose()
        self._write_receipt(manifest, store)
        return manifest

    def _write_receipt(self, manifest: Manifest, store: BackupStore) -> None:
        receipt = Receipt(
            name=manifest.name, destination=store.description, created_at=manifest.created_at
        )
        try:
            LocalStore(self.settings.data_dir).write_small(
                RECEIPT_FILE, receipt.model_dump_json().encode()
            )
        except BackupError as exc:
            log.warning("backup %s done, but its receipt was not saved: %s", manifest.name, exc)

    def list(self, source: str | None = None) -> list[BackupEntry]:
        return list_backups(self.store(source))

    def verify(self, name: str | None = None, source: str | None = None) -> Verification:
        """Check a backup (``check_backup``); the record of what was checked."""
        store = self.store(source)
        if make_url(self.settings.effective_database_url).get_backend_name() != "postgresql":
            # A PostgreSQL backup is then checked without a trial restore (and says so).
            return check_backup(store, name, staging_dir=self._staging())[1]
        with self._engine() as engine:
            return check_backup(
                store,
                name,
                staging_dir=self._staging(),
                server=engine,
                pg_bin_dir=self.settings.pg_bin_dir,
            )[1]

    def restore(self, name: str, source: str | None = None, *, force: bool = False) -> Manifest:
        backend = self.backend  # refuses other databases before anything else
        store = self.store(source)
        manifest = load_manifest(store, name)
        if manifest.backend != backend:
            raise RestoreRefused(_wrong_backend(manifest, backend))
        if backend == "postgresql":
            from imgclass.warehouse import backup_postgres

            with self._engine() as engine:
                return backup_postgres.restore_backup(
                    store,
                    manifest,
                    engine,
                    force=force,
                    staging_dir=self._staging(),
                    bin_dir=self.settings.pg_bin_dir,
                )
        return restore_backup(store, manifest.name, self.database, force=force)

    def policy(self, **overrides: int | None) -> RetentionPolicy:
        values = {
            "keep_last": self.settings.backup_keep_last,
            "keep_daily": self.settings.backup_keep_daily,
            "keep_weekly": self.settings.backup_keep_weekly,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return RetentionPolicy(**values)

    def prune(
        self,
        source: str | None = None,
        policy: RetentionPolicy | None = None,
        *,
        dry_run: bool = False,
    ) -> PruneResult:
        return prune_backups(self.store(source), policy or self.policy(), dry_run=dry_run)


def _wrong_backend(manifest: Manifest, configured: Backend) -> str:
    if manifest.backend == "sqlite":
        return (
            f"{manifest.name} is a backup of a SQLite warehouse and the configured database "
            "is PostgreSQL: restore it to a SQLite file (IMGCLASS_DATABASE_URL=sqlite:///FILE "
            f"imgclass backup restore {manifest.name}), then copy that into PostgreSQL with "
            "`imgclass db migrate-sqlite-to-postgres --from sqlite:///FILE --to POSTGRES_URL`"
        )
    return (
        f"{manifest.name} is a backup of a PostgreSQL warehouse and the configured database "
        f"is {configured}: set IMGCLASS_DATABASE_URL to the PostgreSQL database to restore "
        "it into"
    )


def last_backup_time(settings: Settings, engine: Engine | None = None) -> float | None:
    """Epoch seconds of the newest backup known locally, None if there is none.

    The newest of: the manifests in ``<data dir>/backups`` (read from their names, so
    this is cheap enough for every metrics scrape), the receipt this host writes after
    each successful backup to any destination, S3 included, and, when ``engine`` is a
    PostgreSQL warehouse, the newest receipt in its ``backup_receipt`` table, written
    by whichever host took the backup (one indexed row).
    """
    times: list[float] = []
    if engine is not None and engine.dialect.name == "postgresql":
        from imgclass.warehouse.backup_postgres import last_receipt_time

        if (recorded := last_receipt_time(engine)) is not None:
            times.append(recorded)
    try:
        names = os.listdir(settings.local_backup_dir)
    except OSError:
        names = []
    stamps = [m.group(1) for n in names if (m := _MANIFEST_FILE.match(n))]
    if stamps:
        times.append(name_time(max(stamps)).timestamp())
    try:
        raw = (settings.data_dir / RECEIPT_FILE).read_bytes()[:4096]
        times.append(Receipt.model_validate_json(raw).created_at.timestamp())
    except (OSError, ValidationError):
        pass
    return max(times) if times else None
