"""`imgclass db migrate-sqlite-to-postgres`: a warehouse filled by real predictions moves over."""

from __future__ import annotations

import io

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from imgclass.app import create_app, services
from imgclass.cli import main
from imgclass.config import Settings
from imgclass.warehouse.db import make_engine
from imgclass.warehouse.recorder import utc_now
from imgclass.warehouse.schema import api_event_fact, metadata, prediction_feedback

COMMAND = ("db", "migrate-sqlite-to-postgres")


def run(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, [*COMMAND, *args])


def post(client, files, **headers):
    data = {"image": [(io.BytesIO(content), name) for name, content in files]}
    return client.post(
        "/api/v1/predict", data=data, content_type="multipart/form-data", headers=headers
    )


def dump(url: str) -> dict[str, list[tuple]]:
    """Every row of every table, in key order."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table.name: [
                    tuple(row)
                    for row in conn.execute(select(table).order_by(*table.primary_key.columns))
                ]
                for table in metadata.sorted_tables
            }
    finally:
        engine.dispose()


@pytest.fixture
def warehouse(app, client, cat_jpeg, coffee_jpeg, settings) -> tuple[str, str]:
    """A SQLite warehouse written by the real app: its URL and a user's API key."""
    _, key = services(app).users.add("alice")
    assert post(client, [("cat.jpg", cat_jpeg)]).status_code == 200
    assert post(client, [("cat.jpg", cat_jpeg)]).status_code == 200  # a cache hit
    multi = [("a.jpg", coffee_jpeg), ("b.jpg", cat_jpeg)]
    assert post(client, multi, Authorization=f"Bearer {key}").status_code == 200
    assert post(client, [("empty.jpg", b"")]).status_code == 400  # a failure is a fact too
    with services(app).engine.begin() as conn:
        first = conn.execute(select(api_event_fact).order_by(api_event_fact.c.event_id)).first()
        conn.execute(
            prediction_feedback.insert().values(
                event_id=first.event_id,
                true_class_key=first.class_key,
                is_correct=True,
                user_id=0,
                created_at=utc_now(),
            )
        )
    return f"sqlite:///{settings.data_dir / 'imgclass.db'}", key


def test_a_real_warehouse_moves_over_with_its_keys(
    warehouse, fresh_postgres, model_dir, tmp_path, coffee_jpeg
):
    source, key = warehouse
    before = dump(source)
    assert len(before["api_event_fact"]) == 5 and len(before["prediction_feedback"]) == 1

    result = run("--from", source, "--to", fresh_postgres)
    assert result.exit_code == 0, result.output
    assert "row counts (verified)" in result.output and "api_event_fact" in result.output
    assert dump(fresh_postgres) == before

    # The server runs on the copy: old keys still authenticate, and new rows get new keys.
    pg = Settings(data_dir=tmp_path / "pg", model_dir=model_dir, database_url=fresh_postgres)
    app = create_app(pg)
    try:
        files = [("new-name.jpg", coffee_jpeg)]
        resp = post(app.test_client(), files, Authorization=f"Bearer {key}")
        assert resp.status_code == 200
        with services(app).engine.connect() as conn:
            newest = conn.execute(
                select(api_event_fact.c.event_id, api_event_fact.c.image_key)
                .order_by(api_event_fact.c.event_id.desc())
                .limit(1)
            ).one()
            users = conn.execute(text("SELECT COUNT(*) FROM user_dim")).scalar_one()
        assert newest.event_id == max(r[0] for r in before["api_event_fact"]) + 1
        assert newest.image_key == max(r[0] for r in before["image_dim"]) + 1
        assert users == len(before["user_dim"])  # alice's member was copied, not recreated
        assert not (tmp_path / "pg" / "admin-token").exists()  # the copied admin counts
    finally:
        services(app).engine.dispose()

    # The target now holds data: refused without --force, replaced with it.
    refused = run("--from", source, "--to", fresh_postgres)
    assert refused.exit_code == 1
    assert "already holds data" in refused.output and "api_event_fact (6 rows)" in refused.output
    forced = run("--from", source, "--to", fresh_postgres, "--force", "--batch-size", "2")
    assert forced.exit_code == 0, forced.output
    assert dump(fresh_postgres) == before


def test_a_failed_copy_keeps_nothing(warehouse, fresh_postgres):
    source, _ = warehouse
    engine = make_engine(source)
    with engine.begin() as conn:  # SQLite stores what PostgreSQL's varchar(255) refuses
        conn.execute(
            text("UPDATE image_dim SET image_filename = :n WHERE image_key = 1"), {"n": "x" * 300}
        )
    engine.dispose()
    result = run("--from", source, "--to", fresh_postgres)
    assert result.exit_code == 1
    assert "copying table image_dim failed" in result.output and "too long" in result.output
    target = make_engine(fresh_postgres)
    try:
        with target.connect() as conn:
            assert conn.execute(select(func.count()).select_from(api_event_fact)).scalar() == 0
            assert conn.execute(text("SELECT COUNT(*) FROM time_dim")).scalar() == 0
    finally:
        target.dispose()


def test_an_old_source_must_be_upgraded_first(tmp_path, fresh_postgres):
    from imgclass.warehouse.migrate import upgrade

    source = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(source)
    upgrade(engine, "0001")
    engine.dispose()
    result = run("--from", source, "--to", fresh_postgres)
    assert result.exit_code == 1 and "revision 0001" in result.output
    assert "imgclass db upgrade" in result.output


def test_bad_arguments_are_clear_errors(tmp_path, settings, app):
    source = f"sqlite:///{settings.data_dir / 'imgclass.db'}"
    pg = "postgresql+psycopg://postgres@127.0.0.1:5432/x"
    cases = [
        (("--from", pg, "--to", pg), 2, "must be a sqlite URL"),
        (("--from", source, "--to", source), 2, "must be a postgresql URL"),
        (("--from", f"sqlite:///{tmp_path / 'none.db'}", "--to", pg), 2, "no SQLite database"),
        (("--from", "not a url", "--to", pg), 2, "not a database URL"),
        (("--from", source, "--to", pg.replace("5432", "notaport")), 2, "not a database URL"),
        # Port 1 on loopback: nothing listens, the connection is refused at once.
        (("--from", source, "--to", "postgresql+psycopg://u@127.0.0.1:1/x"), 1, "cannot use"),
    ]
    for args, status, message in cases:
        result = run(*args)
        assert (result.exit_code, message in result.output) == (status, True), result.output
    assert not (tmp_path / "none.db").exists()  # a mistyped source is never created


@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://"])
def test_a_url_without_a_driver_gets_psycopg(warehouse, fresh_postgres, scheme):
    source, _ = warehouse
    target = fresh_postgres.replace("postgresql+psycopg://", scheme)
    result = run("--from", source, "--to", target)
    assert result.exit_code == 0, result.output
    assert dump(fresh_postgres) == dump(source)


def test_the_serve_hint_can_be_pasted_and_says_the_password_is_hidden(warehouse, fresh_postgres):
    source, _ = warehouse
    # Trust authentication on the local server: the password is sent to no one.
    target = fresh_postgres.replace("postgres@", "postgres:s3cr%2Ft@")
    result = run("--from", source, "--to", target)
    assert result.exit_code == 0, result.output
    assert "s3cr" not in result.output
    hint = result.output.split("serve from it with ", 1)[1]
    placeholder = fresh_postgres.replace("postgres@", "postgres:PASSWORD@")
    assert hint.startswith(f"IMGCLASS_DATABASE_URL={placeholder} ")
    assert "password is not shown: put it in place of PASSWORD" in hint
    assert "***" not in hint
    plain = run("--from", source, "--to", fresh_postgres, "--force")
    assert plain.output.endswith(f"serve from it with IMGCLASS_DATABASE_URL={fresh_postgres}\n")
