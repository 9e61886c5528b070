"""Backups of the live warehouse: consistent under writes, verified, restorable, pruned.

Real SQLite files throughout; S3 through moto's server mode, a real HTTP S3 endpoint
on loopback.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import UTC, datetime

import pytest

from imgclass.config import Settings
from imgclass.warehouse.backup import (
    Backups,
    backup_names,
    create_backup,
    inspect_database,
    last_backup_time,
    list_backups,
    prune_backups,
    restore_backup,
    verify_backup,
)
from imgclass.warehouse.backup_errors import (
    BackupCorrupt,
    BackupInProgress,
    BackupNotFound,
    BackupUnsupported,
    DestinationUnavailable,
    InvalidDestination,
    RestoreRefused,
)
from imgclass.warehouse.backup_retention import RetentionPolicy, plan_retention
from imgclass.warehouse.backup_store import LocalStore
from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import head_revision, upgrade
from imgclass.warehouse.recorder import Recorder
from tests.support.s3 import closed_port, moto_server
from tests.warehouse.test_recorder import event


def request_ids(db) -> list[str]:
    """request_id of every fact, in commit (event_id) order."""
    with closing(sqlite3.connect(db)) as con:
        return [
            r[0] for r in con.execute("SELECT request_id FROM api_event_fact ORDER BY event_id")
        ]


@pytest.fixture
def warehouse(tmp_path):
    """A migrated warehouse with a few events, and its engine."""
    db = tmp_path / "data" / "imgclass.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    Recorder(engine).record([event(f"old-{i}") for i in range(5)])
    yield db, engine
    engine.dispose()


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "backups")


def _writer(url: str, acked, stop, limit: int) -> None:
    """Record one event per transaction until told to stop; report each after its commit."""
    recorder = Recorder(make_engine(url))
    for i in range(limit):
        if stop.is_set():
            break
        recorder.record([event(f"live-{i}", sha=f"{i % 50:02d}" * 32)])
        acked.put(f"live-{i}")  # acknowledged: the commit has returned
    acked.put(None)


@pytest.mark.slow
def test_a_backup_under_write_load_holds_every_event_acknowledged_before_it(tmp_path, warehouse):
    db, engine = warehouse
    recorder = Recorder(engine)
    for batch in range(4):  # enough pages that the copy is not instantaneous
        recorder.record([event(f"pre-{batch}-{i}", sha=f"{i:064x}") for i in range(500)])
    ctx = multiprocessing.get_context("spawn")
    acked, stop = ctx.Queue(), ctx.Event()
    writer = ctx.Process(target=_writer, args=(str(engine.url), acked, stop, 20_000))
    writer.start()
    try:
        seen: list[str] = []
        while len(seen) < 30:  # the writer is well under way
            seen.append(acked.get(timeout=60))
        # Everything acknowledged so far committed before the backup begins.
        while not acked.empty():
            seen.append(acked.get())
        before = list(seen)
        store = LocalStore(tmp_path / "backups")
        manifest = create_backup(engine, store)
        after_backup = len(seen)
        while len(seen) < after_backup + 30:  # and it kept writing afterwards
            seen.append(acked.get(timeout=60))
    finally:
        stop.set()
    while (item := acked.get(timeout=60)) is not None:
        seen.append(item)
    writer.join(60)
    assert writer.exitcode == 0

    restored = tmp_path / "restored" / "imgclass.db"
    restore_backup(store, manifest.name, restored)
    assert inspect_database(restored, full=True).check == "ok"
    live = [r for r in request_ids(restored) if r.startswith("live-")]
    assert set(before) <= set(live), "an event acknowledged before the backup is missing"
    # One point in time: exactly the first N acknowledged events, no gaps, nothing later.
    assert live == seen[: len(live)]
    assert manifest.tables["api_event_fact"] == 5 + 2000 + len(live)
    assert request_ids(db)[-len(seen) :] == seen  # the live database has them all


def test_manifest_describes_the_backup(tmp_path, warehouse, store):
    db, engine = warehouse
    manifest = create_backup(engine, store)
    assert manifest.name in backup_names(store)
    assert manifest.source == str(db)
    assert manifest.schema_revision == head_revision()
    assert manifest.tables["api_event_fact"] == 5 and manifest.quick_check == "ok"
    assert manifest.tool.startswith("imgclass ") and manifest.compression == "zstd"
    assert abs(manifest.created_at.timestamp() - time.time()) < 600
    on_disk = json.loads((store.directory / f"{manifest.name}.json").read_text())
    assert on_disk["compressed"]["sha256"] == manifest.compressed.sha256
    data = store.directory / manifest.file
    assert data.stat().st_size == manifest.compressed.size < manifest.uncompressed.size
    assert not (store.directory / f"{manifest.name}.verify.json").exists()
    assert verify_backup(store, manifest.name) == manifest
    [entry] = list_backups(store)
    assert entry.verification.ok and entry.manifest == manifest


def test_gzip_backups_verify_and_restore(tmp_path, warehouse, store):
    _, engine = warehouse
    manifest = create_backup(engine, store, compression="gzip")
    assert manifest.file.endswith(".db.gz")
    verify_backup(store)
    restore_backup(store, manifest.name, tmp_path / "r.db")
    assert len(request_ids(tmp_path / "r.db")) == 5


def test_a_flipped_byte_fails_verification_clearly(warehouse, store):
    _, engine = warehouse
    manifest = create_backup(engine, store)
    data = store.directory / manifest.file
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(BackupCorrupt, match="checksum mismatch"):
        verify_backup(store, manifest.name)
    [entry] = list_backups(store)
    assert entry.verification is not None and not entry.verification.ok
    assert "checksum mismatch" in entry.verification.message


def test_a_manifest_that_disagrees_with_the_data_fails_verification(warehouse, store):
    _, engine = warehouse
    manifest = create_backup(engine, store)
    path = store.directory / f"{manifest.name}.json"
    doc = json.loads(path.read_text())
    doc["tables"]["api_event_fact"] = 6
    path.write_text(json.dumps(doc))
    with pytest.raises(BackupCorrupt, match=r"row counts differ.*api_event_fact 5 != 6"):
        verify_backup(store, manifest.name)
    doc["uncompressed"]["size"] = 1000  # a decompression bomb would be stopped here
    path.write_text(json.dumps(doc))
    with pytest.raises(BackupCorrupt, match="more than the 1000 bytes"):
        verify_backup(store, manifest.name)
    doc["file"] = "../../data/imgclass.db"
    path.write_text(json.dumps(doc))
    with pytest.raises(BackupCorrupt, match=r"manifest .* is not valid"):
        verify_backup(store, manifest.name)


def test_unknown_and_malformed_names(warehouse, store):
    with pytest.raises(BackupNotFound, match="no backups"):
        verify_backup(store)
    create_backup(warehouse[1], store)
    with pytest.raises(BackupNotFound, match=r"no backup named imgclass-20200101T000000\.000000Z"):
        verify_backup(store, "imgclass-20200101T000000.000000Z")
    with pytest.raises(BackupNotFound, match="not a backup name"):
        verify_backup(store, "../../etc/passwd")


def test_restore_refuses_an_existing_database_unless_forced(tmp_path, warehouse, store):
    db, engine = warehouse
    manifest = create_backup(engine, store)
    Recorder(engine).record([event("after-backup")])
    with pytest.raises(RestoreRefused, match="exists; pass --force"):
        restore_backup(store, manifest.name, db)
    # Even forced, a database the service still has open is not swapped under it.
    with pytest.raises(RestoreRefused, match="open by another process"):
        restore_backup(store, manifest.name, db, force=True)
    assert request_ids(db)[-1] == "after-backup"
    engine.dispose()
    # A crashed writer leaves committed transactions in the old database's WAL; they must
    # never be replayed onto the restored file.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('PRAGMA journal_mode=WAL'); "
            "c.execute(\"UPDATE api_event_fact SET request_id = 'stale-wal'\"); c.commit(); "
            "os._exit(0)",
            str(db),
        ],
        check=True,
    )
    assert db.with_name("imgclass.db-wal").stat().st_size > 0
    restore_backup(store, manifest.name, db, force=True)
    assert request_ids(db) == [f"old-{i}" for i in range(5)]
    assert not db.with_name("imgclass.db-wal").exists()
    assert not db.with_name("imgclass.db-shm").exists()
    assert not list(db.parent.glob(".imgclass.db.restore-*"))
    # The service opens the restored file as usual.
    reopened = make_engine(f"sqlite:///{db}")
    Recorder(reopened).record([event("after-restore")])
    assert request_ids(db)[-1] == "after-restore"
    reopened.dispose()


def test_a_corrupt_backup_is_never_restored(tmp_path, warehouse, store):
    db, engine = warehouse
    manifest = create_backup(engine, store)
    engine.dispose()
    data = store.directory / manifest.file
    data.write_bytes(data.read_bytes()[:-10])
    before = db.read_bytes()
    with pytest.raises(BackupCorrupt):
        restore_backup(store, manifest.name, db, force=True)
    assert db.read_bytes() == before
    assert not list(db.parent.glob(".imgclass.db.restore-*"))


def test_one_backup_at_a_time(warehouse, store):
    db, engine = warehouse
    with open(db.parent / ".imgclass.db.backup-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(BackupInProgress):
            create_backup(engine, store)
    create_backup(engine, store)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_prune_keeps_the_newest_and_the_newest_of_each_day_and_week(warehouse, store):
    _, engine = warehouse
    times = {
        "2026-11-02 10:00": "weekly 2026-W45",
        "2026-11-09 09:00": None,  # an older one of a day and week that have their keeper
        "2026-11-09 18:00": "daily 2026-11-09",
        "2026-11-10 08:00": "daily 2026-11-10",
        "2026-11-11 07:00": None,
        "2026-11-11 12:00": "last 2",
        "2026-11-11 23:00": "last 1, daily 2026-11-11, weekly 2026-W46",
    }
    names = {when: create_backup(engine, store, now=at(when)).name for when in times}
    verify_backup(store, names["2026-11-09 09:00"])  # its verify record goes too
    policy = RetentionPolicy(keep_last=2, keep_daily=3, keep_weekly=2)
    dry = prune_backups(store, policy, dry_run=True)
    assert len(backup_names(store)) == 7
    result = prune_backups(store, policy)
    assert result == dry
    assert sorted(result.deleted) == sorted(names[w] for w, why in times.items() if why is None)
    assert {names[w]: why for w, why in times.items() if why} == {
        n: ", ".join(r) for n, r in result.kept.items()
    }
    assert backup_names(store) == sorted(names[w] for w, why in times.items() if why)
    leftovers = {p.name.split(".")[0] for p in store.directory.iterdir()}
    assert leftovers == {n.split(".")[0] for n in backup_names(store)}


def test_retention_counts_only_days_that_have_backups():
    backups = [("a", at("2026-01-01 10:00")), ("b", at("2026-03-01 10:00"))]
    keep = plan_retention(backups, RetentionPolicy(keep_last=1, keep_daily=2, keep_weekly=0))
    assert keep == {"b": ["last 1", "daily 2026-03-01"], "a": ["daily 2026-01-01"]}
    with pytest.raises(ValueError):
        RetentionPolicy(keep_last=0)


def test_a_database_neither_sqlite_nor_postgresql_is_refused(tmp_path):
    # (PostgreSQL warehouses have their own tests: tests/warehouse/test_backup_postgres.py.)
    settings = Settings(data_dir=tmp_path, database_url="mysql+pymysql://imgclass@db/imgclass")
    with pytest.raises(BackupUnsupported, match=r"SQLite and PostgreSQL .* this database is mysql"):
        Backups(settings).create()
    store = LocalStore(tmp_path / "backups")
    with pytest.raises(BackupUnsupported, match="this database is mysql"):
        Backups(settings).restore("imgclass-20261125T143210.123456Z", store.description)


def test_bad_destinations(tmp_path):
    backups = Backups(Settings(data_dir=tmp_path))
    for spec, message in [
        ("ftp://host/dir", "unsupported backup destination scheme 'ftp'"),
        ("s3://UPPER_case", "invalid S3 bucket name"),
        ("s3://ok-bucket/a/../b", "invalid S3 prefix"),
    ]:
        with pytest.raises(InvalidDestination, match=message):
            backups.store(spec)


def test_last_backup_time(tmp_path, warehouse):
    db, engine = warehouse
    settings = Settings(data_dir=db.parent)
    assert last_backup_time(settings) is None
    manifest = Backups(settings, engine).create(now=at("2026-11-20 03:00"))
    assert last_backup_time(settings) == manifest.created_at.timestamp()
    # A backup elsewhere (here another directory) counts through this host's receipt.
    newer = Backups(settings, engine).create(
        str(tmp_path / "elsewhere"), now=at("2026-11-21 03:00")
    )
    assert last_backup_time(settings) == newer.created_at.timestamp()


# -- S3 (moto's server, over HTTP) ----------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    with moto_server() as server:
        server.client().create_bucket(Bucket="imgclass-backups")
        yield server


def s3_settings(data_dir, server, **extra) -> Settings:
    env = server.settings_env()
    return Settings(
        data_dir=data_dir,
        s3_endpoint_url=env["IMGCLASS_S3_ENDPOINT_URL"],
        s3_region=env["IMGCLASS_S3_REGION"],
        s3_access_key_id=env["IMGCLASS_S3_ACCESS_KEY_ID"],
        s3_secret_access_key=env["IMGCLASS_S3_SECRET_ACCESS_KEY"],
        **extra,
    )


def test_s3_create_list_verify_restore(warehouse, s3):
    db, engine = warehouse
    dest = "s3://imgclass-backups/prod/warehouse"
    backups = Backups(s3_settings(db.parent, s3, backup_destination=dest), engine)
    manifest = backups.create()
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket="imgclass-backups")["Contents"]}
    assert {f"prod/warehouse/{manifest.name}.json", f"prod/warehouse/{manifest.file}"} <= keys
    assert [e.manifest.name for e in backups.list()] == [manifest.name]
    assert backups.verify().name == manifest.name
    assert backups.list()[0].verification.ok
    assert last_backup_time(backups.settings) == manifest.created_at.timestamp()
    Recorder(engine).record([event("after-backup")])
    engine.dispose()
    backups.restore(manifest.name, force=True)
    assert request_ids(db) == [f"old-{i}" for i in range(5)]
    # Corruption in the bucket is caught too.
    s3.client().put_object(
        Bucket="imgclass-backups", Key=f"prod/warehouse/{manifest.file}", Body=b"garbage"
    )
    with pytest.raises(BackupCorrupt, match="bytes, the manifest says"):
        backups.verify(manifest.name)


def test_s3_missing_bucket_and_unreachable_endpoint(warehouse, s3):
    db, engine = warehouse
    backups = Backups(s3_settings(db.parent, s3), engine)
    with pytest.raises(DestinationUnavailable, match="bucket 'no-such-bucket' does not exist"):
        backups.create("s3://no-such-bucket/x")
    with pytest.raises(BackupNotFound, match="no backup named"):
        backups.verify("imgclass-20200101T000000.000000Z", "s3://imgclass-backups/empty")
    dead = Backups(
        s3_settings(db.parent, s3).model_copy(
            update={"s3_endpoint_url": f"http://127.0.0.1:{closed_port()}"}
        ),
        engine,
    )
    with pytest.raises(DestinationUnavailable, match="cannot reach the S3 endpoint"):
        dead.create("s3://imgclass-backups/x")
    assert last_backup_time(backups.settings) is None  # nothing succeeded
