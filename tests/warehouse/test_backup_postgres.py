"""Backups of a PostgreSQL warehouse: pg_dump in one snapshot, verified, restored, on S3.

Everything against the real local PostgreSQL and Debian's pg_dump/pg_restore; S3
through moto's server over HTTP.
"""

from __future__ import annotations

import io
import json
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from imgclass.config import Settings
from imgclass.warehouse import pg_client
from imgclass.warehouse.backup import Backups, last_backup_time, list_backups
from imgclass.warehouse.backup_codec import compress_stream, decompress
from imgclass.warehouse.backup_errors import (
    BackupCorrupt,
    BackupError,
    BackupInProgress,
    RestoreRefused,
    ToolUnavailable,
)
from imgclass.warehouse.backup_postgres import BACKUP_LOCK_KEY, SCRATCH_PREFIX, count_tables
from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import head_revision, upgrade
from imgclass.warehouse.recorder import Recorder
from tests.support.postgres import ADMIN_DSN, temporary_database
from tests.support.s3 import moto_server
from tests.support.system import require_binary
from tests.warehouse.test_backup import s3_settings
from tests.warehouse.test_recorder import event

pytestmark = pytest.mark.postgresql


@pytest.fixture(autouse=True)
def _client_programs():
    require_binary("pg_dump", "postgresql-client")
    require_binary("pg_restore", "postgresql-client")


def request_ids(url: str) -> list[str]:
    """request_id of every fact, in commit (event_id) order."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            query = text("SELECT request_id FROM api_event_fact ORDER BY event_id")
            return list(conn.execute(query).scalars())
    finally:
        engine.dispose()


def counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return count_tables(conn)
    finally:
        engine.dispose()


def record(url: str, ids: list[str]) -> None:
    engine = make_engine(url)
    try:
        Recorder(engine).record([event(i, sha=f"{n:064x}") for n, i in enumerate(ids)])
    finally:
        engine.dispose()


def scratch_databases() -> list[str]:
    with psycopg.connect(ADMIN_DSN) as admin:
        rows = admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (SCRATCH_PREFIX + "%",)
        )
        return [name for (name,) in rows]


@pytest.fixture
def warehouse(postgres_url, tmp_path):
    """A migrated PostgreSQL warehouse with five events, and Backups configured for it."""
    record(postgres_url, [f"old-{i}" for i in range(5)])
    data = tmp_path / "data"
    data.mkdir()
    return Backups(Settings(data_dir=data, database_url=postgres_url))


def _writer(url: str, acked: list[str], stop: threading.Event, limit: int) -> None:
    """Record one event per transaction until told to stop; note each after its commit."""
    engine = make_engine(url)
    try:
        recorder = Recorder(engine)
        for i in range(limit):
            if stop.is_set():
                break
            recorder.record([event(f"live-{i}", sha=f"{i % 50:02d}" * 32)])
            acked.append(f"live-{i}")  # acknowledged: the commit has returned
    finally:
        engine.dispose()


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 120  # a bound against hanging, not a speed requirement
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_backup_under_write_load_holds_every_event_acknowledged_before_it(warehouse):
    url = warehouse.settings.database_url
    for batch in range(4):  # enough rows that the dump is not instantaneous
        record(url, [f"pre-{batch}-{i}" for i in range(500)])
    acked: list[str] = []
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(url, acked, stop, 20_000))
    writer.start()
    try:
        wait_for(lambda: len(acked) >= 30, "the writer to get going")
        before = list(acked)  # all committed before the backup begins
        manifest = warehouse.create()
        after_backup = len(acked)
        wait_for(lambda: len(acked) >= after_backup + 30, "writes after the backup")
    finally:
        stop.set()
        writer.join(120)
    assert not writer.is_alive()

    with temporary_database() as restored_url:
        target = Backups(warehouse.settings.model_copy(update={"database_url": restored_url}))
        target.restore(manifest.name)  # an empty database: no --force needed
        live = [r for r in request_ids(restored_url) if r.startswith("live-")]
        assert set(before) <= set(live), "an event acknowledged before the backup is missing"
        # One point in time: exactly the first N acknowledged events, no gaps, nothing later.
        assert live == acked[: len(live)]
        # The manifest's counts are the archive's: taken in the dump's own snapshot.
        assert counts(restored_url) == manifest.tables
        assert manifest.tables["api_event_fact"] == 5 + 2000 + len(live)
    assert request_ids(url)[-len(acked) :] == acked  # the live database has them all


def test_manifest_describes_a_postgresql_backup(warehouse):
    manifest = warehouse.create()
    store = warehouse.store()
    assert manifest.backend == "postgresql" and manifest.file.endswith(".pgdump.zst")
    assert manifest.schema_revision == head_revision()
    assert manifest.tables["api_event_fact"] == 5
    assert manifest.tables["alembic_version"] == 1
    server = counts(warehouse.settings.database_url)
    assert set(manifest.tables) == set(server)
    assert manifest.pg_dump_version == pg_client.find("pg_dump").version
    assert manifest.postgresql_version and manifest.sqlite_version is None
    on_disk = json.loads((store.directory / f"{manifest.name}.json").read_text())
    assert on_disk["backend"] == "postgresql"
    data = store.directory / manifest.file
    assert data.stat().st_size == manifest.compressed.size < manifest.uncompressed.size
    assert data.stat().st_mode & 0o777 == 0o600
    verified = warehouse.verify()
    assert verified.ok and verified.name == manifest.name
    assert "trial restore into a scratch database" in verified.message
    assert scratch_databases() == []  # dropped again
    [entry] = list_backups(store)
    assert entry.manifest == manifest and entry.verification.ok


def test_gzip_backups_verify_and_restore(warehouse):
    settings = warehouse.settings.model_copy(update={"backup_compression": "gzip"})
    backups = Backups(settings)
    manifest = backups.create()
    assert manifest.file.endswith(".pgdump.gz")
    assert backups.verify(manifest.name).ok
    record(settings.database_url, ["later"])
    backups.restore(manifest.name, force=True)
    assert request_ids(settings.database_url) == [f"old-{i}" for i in range(5)]


def test_verify_catches_a_flipped_byte(warehouse):
    manifest = warehouse.create()
    data = warehouse.store().directory / manifest.file
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(BackupCorrupt, match="checksum mismatch"):
        warehouse.verify(manifest.name)
    [entry] = warehouse.list()
    assert not entry.verification.ok and "checksum mismatch" in entry.verification.message


def test_verify_catches_a_truncated_archive(warehouse):
    manifest = warehouse.create()
    data = warehouse.store().directory / manifest.file
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(BackupCorrupt, match="bytes, the manifest says"):
        warehouse.verify(manifest.name)


def test_a_truncated_dump_with_matching_checksums_fails_the_archive_checks(warehouse, tmp_path):
    """Beyond the checksums: pg_restore itself must read the archive and restore it."""
    manifest = warehouse.create()
    record(warehouse.settings.database_url, ["old-5"])  # after the backup: must survive
    store = warehouse.store()
    with io.BytesIO() as out:
        decompress(store.directory / manifest.file, out, "zstd", manifest.uncompressed.size)
        plain = out.getvalue()
    path = store.directory / f"{manifest.name}.json"
    doc = json.loads(path.read_text())
    for cut, message in [
        (len(plain) * 9 // 10, "trial restore .* failed"),  # table of contents intact
        (200, "pg_restore cannot read"),  # not even a table of contents
    ]:
        packed = tmp_path / f"cut-{cut}"
        raw, squeezed = compress_stream(io.BytesIO(plain[:cut]), packed, "zstd")
        (store.directory / manifest.file).write_bytes(packed.read_bytes())
        doc["compressed"] = {"size": squeezed.size, "sha256": squeezed.sha256}
        doc["uncompressed"] = {"size": raw.size, "sha256": raw.sha256}
        path.write_text(json.dumps(doc))
        with pytest.raises(BackupCorrupt, match=message):
            warehouse.verify(manifest.name)
        if cut > 200:  # a restore fails on the damaged data, in its one transaction
            with pytest.raises(BackupError, match=r"pg_restore failed, .* is unchanged"):
                warehouse.restore(manifest.name, force=True)
            assert request_ids(warehouse.settings.database_url) == [f"old-{i}" for i in range(6)]
    assert scratch_databases() == []


@contextmanager
def role_without_createdb():
    role = f"imgclass_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
        try:
            yield role
        finally:
            admin.execute(f'DROP ROLE "{role}"')


def test_verify_says_plainly_what_it_could_not_check(warehouse):
    manifest = warehouse.create()
    url = warehouse.settings.database_url
    with role_without_createdb() as role:
        limited = url.replace("postgres@", f"{role}@")
        backups = Backups(warehouse.settings.model_copy(update={"database_url": limited}))
        verified = backups.verify(manifest.name)
    assert verified.ok
    assert f"role {role} may not create databases" in verified.message
    assert "row counts not checked" in verified.message and "pg_restore reads" in verified.message
    # With a SQLite warehouse configured there is no server to try a restore on.
    on_sqlite = Backups(warehouse.settings.model_copy(update={"database_url": None}))
    verified = on_sqlite.verify(manifest.name)
    assert verified.ok and "the configured database is not PostgreSQL" in verified.message


def test_restore_refuses_a_database_with_data_unless_forced(warehouse):
    url = warehouse.settings.database_url
    manifest = warehouse.create()
    record(url, ["after-backup"])
    with pytest.raises(RestoreRefused, match=r"holds data \(api_event_fact: 6 rows.*pass --force"):
        warehouse.restore(manifest.name)
    # Even forced, not while a server (an imgclass engine) is connected.
    server = make_engine(url)
    with server.connect(), pytest.raises(RestoreRefused, match="in use by 1 connection"):
        warehouse.restore(manifest.name, force=True)
    server.dispose()
    assert request_ids(url)[-1] == "after-backup"
    warehouse.restore("latest", force=True)
    assert request_ids(url) == [f"old-{i}" for i in range(5)]
    assert counts(url) == manifest.tables
    [entry] = warehouse.list()
    assert entry.verification.ok and entry.verification.message.startswith("restored to")
    # The service writes to the restored database as usual (sequences came along).
    record(url, ["after-restore"])
    assert request_ids(url)[-1] == "after-restore"


def test_a_fresh_install_is_restored_into_without_force(warehouse, tmp_path):
    manifest = warehouse.create()
    with temporary_database() as url:
        engine = make_engine(url)
        upgrade(engine)  # what a server's first start (or the init container) does
        engine.dispose()
        target = Backups(warehouse.settings.model_copy(update={"database_url": url}))
        target.restore(manifest.name)
        assert request_ids(url) == [f"old-{i}" for i in range(5)]


def test_restore_refuses_tables_the_backup_lacks_and_changes_nothing(warehouse):
    url = warehouse.settings.database_url
    manifest = warehouse.create()
    record(url, ["after-backup"])
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE newer_feature (id integer PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(RestoreRefused, match=r"has tables that .* lacks \(newer_feature\)"):
        warehouse.restore(manifest.name, force=True)
    assert request_ids(url)[-1] == "after-backup"


def test_restore_refuses_a_backup_of_the_other_backend(warehouse, tmp_path):
    pg_manifest = warehouse.create()
    sqlite_settings = warehouse.settings.model_copy(update={"database_url": None})
    engine = make_engine(sqlite_settings.effective_database_url)
    upgrade(engine)
    engine.dispose()
    sqlite_manifest = Backups(sqlite_settings).create()
    with pytest.raises(RestoreRefused, match="imgclass db migrate-sqlite-to-postgres"):
        warehouse.restore(sqlite_manifest.name, force=True)
    with pytest.raises(RestoreRefused, match="is a backup of a PostgreSQL warehouse"):
        Backups(sqlite_settings).restore(pg_manifest.name, force=True)
    assert request_ids(warehouse.settings.database_url) == [f"old-{i}" for i in range(5)]


def test_one_backup_at_a_time(warehouse):
    url = warehouse.settings.database_url
    engine = make_engine(url)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": BACKUP_LOCK_KEY})
        with pytest.raises(BackupInProgress, match="already running"):
            warehouse.create()
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": BACKUP_LOCK_KEY})
    engine.dispose()
    assert warehouse.create().backend == "postgresql"


def test_missing_or_too_old_client_programs_are_one_clear_line(warehouse, tmp_path):
    empty = tmp_path / "no-bin"
    empty.mkdir()
    backups = Backups(warehouse.settings.model_copy(update={"pg_bin_dir": empty}))
    with pytest.raises(ToolUnavailable) as missing:
        backups.create()
    assert "pg_dump is not installed" in missing.value.message
    assert "apt-get install postgresql-client" in missing.value.message
    assert "\n" not in missing.value.message
    # A client older than the server (pg_dump refuses those), or than the archive's pg_dump.
    old = pg_client.Program("pg_dump", "/usr/bin/pg_dump", "15.20", 15)
    pg_client.require_dump_of(old, "15.4 (Debian 15.4-1)")
    pg_client.require_dump_of(old, "14.11")
    with pytest.raises(ToolUnavailable, match=r"pg_dump 15\.20 is older than the PostgreSQL 17\.2"):
        pg_client.require_dump_of(old, "17.2 (Debian 17.2-1.pgdg120+1)")
    with pytest.raises(ToolUnavailable, match="install postgresql-client-17"):
        pg_client.require_dump_of(old, "17.2")
    restore = pg_client.Program("pg_restore", "/usr/bin/pg_restore", "15.20", 15)
    with pytest.raises(ToolUnavailable, match=r"by pg_dump 16\.1: install postgresql-client-16"):
        pg_client.require_restore_of(restore, "16.1")


def test_the_password_is_never_on_a_command_line(postgres_url, tmp_path):
    password = "pa:ss\\word w1th spaces"
    engine = make_engine(postgres_url.replace("postgres@", f"postgres:{password}@"))
    try:
        argument = pg_client.dbname_argument(engine, tmp_path)
    finally:
        engine.dispose()
    assert "pa:ss" not in argument and "passfile=" in argument
    passfile = tmp_path / "pgpass"
    assert passfile.stat().st_mode & 0o777 == 0o600  # libpq ignores a readable one
    assert passfile.read_text() == "*:*:*:*:pa\\:ss\\\\word w1th spaces\n"
    # The argument connects (the local server trusts us, so the file is read, not needed).
    done = subprocess.run(
        ["psql", argument.removeprefix("--dbname="), "-Atc", "SELECT current_database()"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == postgres_url.rsplit("/", 1)[1]


def test_the_backup_age_is_known_to_every_replica(warehouse, tmp_path):
    """A backup job's data dir is thrown away: its receipt lives in the database too."""
    manifest = warehouse.create()
    elsewhere = Settings(
        data_dir=tmp_path / "replica", database_url=warehouse.settings.database_url
    )
    assert last_backup_time(elsewhere) is None  # nothing in this replica's data dir
    engine = make_engine(elsewhere.effective_database_url)
    try:
        assert last_backup_time(elsewhere, engine) == manifest.created_at.timestamp()
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def s3():
    with moto_server() as server:
        server.client().create_bucket(Bucket="imgclass-backups")
        yield server


def test_s3_create_list_verify_restore(warehouse, s3):
    dest = "s3://imgclass-backups/prod/postgres"
    settings = s3_settings(
        warehouse.settings.data_dir,
        s3,
        database_url=warehouse.settings.database_url,
        backup_destination=dest,
    )
    backups = Backups(settings)
    manifest = backups.create()
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket="imgclass-backups")["Contents"]}
    assert {f"prod/postgres/{manifest.name}.json", f"prod/postgres/{manifest.file}"} <= keys
    assert [(e.manifest.name, e.manifest.backend) for e in backups.list()] == [
        (manifest.name, "postgresql")
    ]
    assert "trial restore" in backups.verify().message
    record(settings.database_url, ["after-backup"])
    backups.restore(manifest.name, force=True)
    assert request_ids(settings.database_url) == [f"old-{i}" for i in range(5)]
    s3.client().put_object(
        Bucket="imgclass-backups", Key=f"prod/postgres/{manifest.file}", Body=b"garbage"
    )
    with pytest.raises(BackupCorrupt, match="bytes, the manifest says"):
        backups.verify(manifest.name)


def at(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


def test_prune_deletes_postgresql_backups_whole(warehouse):
    names = [warehouse.create(now=at(f"2026-11-{d:02d} 03:00")).name for d in (1, 2, 3)]
    result = warehouse.prune(policy=warehouse.policy(keep_last=1, keep_daily=0, keep_weekly=0))
    assert result.deleted == names[:2]
    left = sorted(p.name for p in Path(warehouse.store().directory).iterdir())
    assert left == [f"{names[2]}.json", f"{names[2]}.pgdump.zst"]
