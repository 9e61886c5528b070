"""`imgclass backup …` run as an operator would: local directory and S3 (moto's server)."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3

import pytest
import zstandard
from click.testing import CliRunner

from imgclass.cli import main
from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import upgrade
from imgclass.warehouse.recorder import Recorder
from tests.support.s3 import closed_port, moto_server
from tests.support.system import require_binary
from tests.warehouse.test_backup import request_ids
from tests.warehouse.test_recorder import event

NAME = re.compile(r"imgclass-\d{8}T\d{6}\.\d{6}Z")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A data dir holding a warehouse with three events."""
    data = tmp_path / "data"
    monkeypatch.setenv("IMGCLASS_DATA_DIR", str(data))
    for var in ("DATABASE_URL", "BACKUP_DESTINATION", "S3_ENDPOINT_URL"):
        monkeypatch.delenv(f"IMGCLASS_{var}", raising=False)
    engine = make_engine(f"sqlite:///{data / 'imgclass.db'}")
    upgrade(engine)
    Recorder(engine).record([event(f"r{i}") for i in range(3)])
    engine.dispose()
    return data


def run(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, list(args))


def failed(result, message: str) -> None:
    """Exit status 1 and a single line naming the problem."""
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1, result.output
    assert message in result.output, result.output


def test_create_list_verify(env):
    created = run("backup", "create")
    assert created.exit_code == 0, created.output
    name = NAME.search(created.output).group(0)
    assert "3 events" in created.output
    assert (env / "backups" / f"{name}.json").is_file()
    listing = run("backup", "list")
    assert listing.exit_code == 0
    row = next(line for line in listing.output.splitlines() if name in line)
    assert " no " in row  # not verified yet
    verified = run("backup", "verify")  # the newest by default
    assert verified.exit_code == 0 and f"{name} ok" in verified.output
    row = next(line for line in run("backup", "list").output.splitlines() if name in line)
    assert " ok " in row
    # A path to one of its files works as well as the name.
    assert run("backup", "verify", str(env / "backups" / f"{name}.json")).exit_code == 0


def test_clear_errors(env):
    failed(run("backup", "verify"), "there are no backups in")
    run("backup", "create")
    failed(run("backup", "verify", "imgclass-20200101T000000.000000Z"), "no backup named")
    failed(run("backup", "restore", "nonsense"), "is not a backup name")
    failed(run("backup", "create", "--to", "ftp://x/y"), "unsupported backup destination")
    assert run("backup", "prune", "--keep-last", "0").exit_code == 2


def test_a_corrupted_backup_fails_verify(env):
    name = NAME.search(run("backup", "create").output).group(0)
    data = next((env / "backups").glob(f"{name}.db.*"))
    raw = bytearray(data.read_bytes())
    raw[-20] ^= 0xFF
    data.write_bytes(bytes(raw))
    failed(run("backup", "verify", name), "checksum mismatch")
    row = next(line for line in run("backup", "list").output.splitlines() if name in line)
    assert "FAILED" in row


def test_restore_needs_force(env):
    name = NAME.search(run("backup", "create").output).group(0)
    engine = make_engine(f"sqlite:///{env / 'imgclass.db'}")
    Recorder(engine).record([event("later")])
    engine.dispose()
    failed(run("backup", "restore", name), "exists; pass --force")
    assert request_ids(env / "imgclass.db")[-1] == "later"
    restored = run("backup", "restore", "latest", "--force")
    assert restored.exit_code == 0, restored.output
    assert f"restored {name}" in restored.output and "3 events" in restored.output
    assert request_ids(env / "imgclass.db") == ["r0", "r1", "r2"]


def test_prune(env, monkeypatch):
    names = [NAME.search(run("backup", "create").output).group(0) for _ in range(3)]
    result = run("backup", "prune", "--keep-last", "1", "--keep-daily", "0", "--keep-weekly", "0")
    assert result.exit_code == 0, result.output
    assert f"deleted {names[0]}" in result.output and f"deleted {names[1]}" in result.output
    assert f"kept {names[2]} (last 1)" in result.output
    assert sorted(p.name for p in (env / "backups").glob("*.json")) == [f"{names[2]}.json"]
    # Defaults come from the settings.
    monkeypatch.setenv("IMGCLASS_BACKUP_KEEP_LAST", "5")
    assert "1 kept, 0 deleted" in run("backup", "prune").output


def test_create_then_prune_by_the_configured_policy(env, monkeypatch):
    """What the nightly CronJob runs: one command that keeps its destination bounded."""
    names = [NAME.search(run("backup", "create").output).group(0) for _ in range(2)]
    for var, value in (("LAST", "2"), ("DAILY", "0"), ("WEEKLY", "0")):
        monkeypatch.setenv(f"IMGCLASS_BACKUP_KEEP_{var}", value)
    result = run("backup", "create", "--prune")
    assert result.exit_code == 0, result.output
    newest = NAME.search(result.output).group(0)
    assert f"deleted {names[0]}" in result.output
    assert f"kept {newest} (last 1)" in result.output
    assert f"kept {names[1]} (last 2)" in result.output
    assert sorted(p.name for p in (env / "backups").glob("*.json")) == [
        f"{names[1]}.json",
        f"{newest}.json",
    ]


@pytest.mark.postgresql
def test_postgresql_round_trip(env, monkeypatch, postgres_url):
    require_binary("pg_dump", "postgresql-client")
    engine = make_engine(postgres_url)
    Recorder(engine).record([event(f"p{i}") for i in range(4)])
    engine.dispose()
    sqlite_name = NAME.search(run("backup", "create").output).group(0)  # the SQLite one
    monkeypatch.setenv("IMGCLASS_DATABASE_URL", postgres_url)
    created = run("backup", "create")
    assert created.exit_code == 0, created.output
    assert "4 events" in created.output
    name = NAME.search(created.output).group(0)
    assert (env / "backups" / f"{name}.pgdump.zst").is_file()
    rows = {
        line.split()[1]: line
        for line in run("backup", "list").output.splitlines()
        if " imgclass-" in line
    }
    assert "postgresql" in rows[name] and "sqlite" in rows[sqlite_name]
    verified = run("backup", "verify")
    assert verified.exit_code == 0, verified.output
    assert f"{name} ok:" in verified.output and "trial restore" in verified.output
    failed(run("backup", "restore", name), "holds data (api_event_fact: 4 rows")
    failed(run("backup", "restore", sqlite_name, "--force"), "migrate-sqlite-to-postgres")
    restored = run("backup", "restore", name, "--force")
    assert restored.exit_code == 0, restored.output
    assert f"restored {name} to PostgreSQL database" in restored.output
    assert "row counts ok, 4 events" in restored.output
    monkeypatch.setenv("IMGCLASS_PG_BIN_DIR", str(env))  # no pg_dump there
    failed(run("backup", "create"), "apt-get install postgresql-client")


def test_s3_round_trip_and_its_errors(env, monkeypatch):
    with moto_server() as s3:
        s3.client().create_bucket(Bucket="ops-backups")
        for key, value in s3.settings_env().items():
            monkeypatch.setenv(key, value)
        dest = "s3://ops-backups/imgclass"
        created = run("backup", "create", "--to", dest)
        assert created.exit_code == 0, created.output
        name = NAME.search(created.output).group(0)
        assert name in run("backup", "list", "--from", dest).output
        assert run("backup", "verify", "--from", dest).exit_code == 0
        assert run("backup", "restore", name, "--from", dest, "--force").exit_code == 0
        assert request_ids(env / "imgclass.db") == ["r0", "r1", "r2"]
        failed(run("backup", "create", "--to", "s3://not-there/x"), "does not exist")
        monkeypatch.setenv("IMGCLASS_S3_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
        failed(run("backup", "list", "--from", dest), "cannot reach the S3 endpoint")


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def names_of(env, count: int) -> list[str]:
    return [NAME.search(run("backup", "create").output).group(0) for _ in range(count)]


def test_names_are_never_cut_piped_or_on_a_narrow_terminal(env):
    names = names_of(env, 2)
    # Piped (not a terminal): one line per backup, however narrow COLUMNS says it is.
    piped = CliRunner(env={"COLUMNS": "60"}).invoke(main, ["backup", "list"])
    assert piped.exit_code == 0, piped.output
    for name in names:
        (row,) = [line for line in piped.output.splitlines() if name in line]
        assert " no " in row and "3 " in row
    # An 80-column terminal: the names stay whole, other columns give way.
    terminal = CliRunner(env={"COLUMNS": "80", "FORCE_COLOR": "1"}).invoke(main, ["backup", "list"])
    assert terminal.exit_code == 0, terminal.output
    lines = ANSI.sub("", terminal.output).splitlines()
    assert max(map(len, lines)) <= 80
    for name in names:
        assert any(name in line for line in lines), terminal.output
    assert "…" not in "".join(line for line in lines if "imgclass-" in line)


def test_list_as_json(env):
    (name,) = names_of(env, 1)
    run("backup", "verify")
    listing = json.loads(run("backup", "list", "--json").output)
    assert listing["destination"] == str(env / "backups")
    (entry,) = listing["backups"]
    assert entry["name"] == name and entry["tables"]["api_event_fact"] == 3
    assert entry["verification"]["ok"] is True
    assert listing["incomplete"] == []


def test_a_directory_that_does_not_exist_is_an_error(env, tmp_path):
    missing = str(tmp_path / "typo")
    failed(run("backup", "list", "--from", missing), "no such directory")
    failed(run("backup", "prune", "--from", missing), "no such directory")
    failed(run("backup", "verify", "--from", missing), "no such directory")
    failed(run("backup", "restore", "latest", "--from", missing), "no such directory")
    assert not (tmp_path / "typo").exists()
    # The default destination before the first backup: simply none yet.
    empty = run("backup", "list")
    assert empty.exit_code == 0 and "no backups yet" in empty.output


def test_a_backup_without_its_manifest_is_listed_and_latest_says_so(env):
    older, newer = names_of(env, 2)
    (env / "backups" / f"{newer}.json").unlink()
    row = next(line for line in run("backup", "list").output.splitlines() if newer in line)
    assert "incomplete: no manifest" in row
    listing = json.loads(run("backup", "list", "--json").output)
    assert [b["name"] for b in listing["backups"]] == [older]
    assert [b["name"] for b in listing["incomplete"]] == [newer]
    verified = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["backup", "verify"])
    assert verified.exit_code == 0
    assert f"note: {newer} has no manifest" in verified.stderr
    assert f"using {older}, the newest complete one" in verified.stderr
    assert verified.stdout.startswith(f"{older} ok")
    # Named explicitly, no note: the operator chose it.
    assert "note" not in run("backup", "verify", older).output


def resign(manifest_path, data_path, plain: bytes) -> None:
    """Replace a backup's data with ``plain`` and its manifest's checksums to match."""
    packed = zstandard.ZstdCompressor().compress(plain)
    data_path.write_bytes(packed)
    manifest = json.loads(manifest_path.read_text())
    manifest["compressed"] = {"size": len(packed), "sha256": hashlib.sha256(packed).hexdigest()}
    manifest["uncompressed"] = {"size": len(plain), "sha256": hashlib.sha256(plain).hexdigest()}
    manifest_path.write_text(json.dumps(manifest))


def test_an_integrity_failure_is_one_line(env, tmp_path):
    (name,) = names_of(env, 1)
    data = env / "backups" / f"{name}.db.zst"
    plain = bytearray(zstandard.ZstdDecompressor().decompress(data.read_bytes()))
    copy = tmp_path / "copy.db"
    copy.write_bytes(plain)
    con = sqlite3.connect(copy)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    (root,) = con.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'class_concept'"
    ).fetchone()
    con.close()
    # Scribble over the cells at the end of a table's root page: integrity_check lists many.
    start = root * page_size - 300
    plain[start : start + 280] = bytes(b ^ 0x5A for b in plain[start : start + 280])
    resign(env / "backups" / f"{name}.json", data, bytes(plain))
    failed(run("backup", "verify", name), "integrity_check failed")
