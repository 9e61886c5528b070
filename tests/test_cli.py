"""The imgclass command: classify, users, db, model — run as a user would."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from imgclass.cli import main
from imgclass.warehouse.migrate import head_revision
from tests.conftest import CAT_CLASSES, ESPRESSO


@pytest.fixture
def env(tmp_path, model_dir, monkeypatch):
    monkeypatch.setenv("IMGCLASS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMGCLASS_MODEL_DIR", str(model_dir))
    monkeypatch.delenv("IMGCLASS_DATABASE_URL", raising=False)
    return tmp_path


def run(*args):
    # A wide terminal, so table cells are not wrapped mid-phrase.
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, list(args), catch_exceptions=False)


def test_classify_a_directory_as_json(env, cat_jpeg, coffee_jpeg):
    photos = env / "photos" / "nested"
    photos.mkdir(parents=True)
    (photos / "cat.jpg").write_bytes(cat_jpeg)
    (photos / "cup.JPG").write_bytes(coffee_jpeg)
    (photos / "notes.txt").write_text("ignored: not an image suffix")
    result = run("classify", str(env / "photos"), "--json", "--top-k", "3")
    assert result.exit_code == 0, result.output
    out = {e["file"].rsplit("/", 1)[1]: e for e in json.loads(result.stdout)}
    assert set(out) == {"cat.jpg", "cup.JPG"}
    assert out["cat.jpg"]["predictions"][0]["class_id"] in CAT_CLASSES
    assert out["cup.JPG"]["predictions"][0]["class_id"] == ESPRESSO
    assert len(out["cup.JPG"]["predictions"]) == 3


def test_classify_table_and_a_bad_file(env, coffee_jpeg):
    (env / "cup.jpg").write_bytes(coffee_jpeg)
    (env / "broken.jpg").write_bytes(b"not an image")
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        main, ["classify", str(env / "cup.jpg"), str(env / "broken.jpg")]
    )
    assert result.exit_code == 1
    assert "espresso" in result.stdout and "not a supported image" in result.stdout


def test_classify_missing_path(env):
    result = CliRunner().invoke(main, ["classify", str(env / "nope.jpg")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_users_lifecycle(env):
    added = run("users", "add", "alice")
    assert added.exit_code == 0
    key = added.stdout.strip()
    assert key.startswith("imgc_")
    assert run("users", "add", "root", "--admin").exit_code == 0
    listing = run("users", "list").stdout
    assert "alice" in listing and "root" in listing and key not in listing
    assert run("users", "revoke", "alice").exit_code == 0
    assert "revoked" in run("users", "list").stdout
    dup = CliRunner().invoke(main, ["users", "add", "alice"])
    assert dup.exit_code == 1 and "already exists" in dup.output


def test_db_upgrade_and_model_info(env, classifier):
    assert f"revision {head_revision()}" in run("db", "upgrade").stdout
    assert (env / "data" / "imgclass.db").is_file()
    info = run("model", "info").stdout
    assert classifier.info.sha256 in info and "efficientnet-lite0" in info


def test_model_export_is_idempotent(env):
    assert "exists" in run("model", "export").stdout


def test_bad_configuration_is_a_clear_error(env, monkeypatch):
    monkeypatch.setenv("IMGCLASS_MAX_UPLOAD_BYTES", "lots")
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 1 and "IMGCLASS_MAX_UPLOAD_BYTES: Input should be" in result.output
    assert "lots" not in result.output and result.output.count("\n") == 1


def test_postgresql_urls_without_a_driver_work(env, fresh_postgres, monkeypatch):
    url = fresh_postgres.replace("postgresql+psycopg://", "postgresql://")
    monkeypatch.setenv("IMGCLASS_DATABASE_URL", url)
    upgraded = run("db", "upgrade")
    assert upgraded.exit_code == 0 and head_revision() in upgraded.output
    stats = run("stats", "--group-by", "status")
    assert stats.exit_code == 0, stats.output
    monkeypatch.setenv("IMGCLASS_DATABASE_URL", url.replace("postgresql://", "postgres://"))
    assert run("users", "add", "pat").exit_code == 0


@pytest.mark.parametrize("command", [("db", "upgrade"), ("stats",), ("serve",)])
def test_a_malformed_database_url_is_one_line_naming_the_variable(env, monkeypatch, command):
    url = "postgresql+psycopg://postgres:s3cret@127.0.0.1:notaport/x"
    monkeypatch.setenv("IMGCLASS_DATABASE_URL", url)
    result = CliRunner().invoke(main, list(command))
    assert result.exit_code == 1
    assert result.output == (
        "Error: invalid IMGCLASS_* configuration: "
        "IMGCLASS_DATABASE_URL: not a database URL (its port is not a number)\n"
    )
