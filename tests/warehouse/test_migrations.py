"""The schema comes from Alembic migrations, and they produce exactly the declared tables."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import current_revision, head_revision, upgrade
from imgclass.warehouse.schema import metadata


def test_upgrade_from_empty_matches_the_declared_schema(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    tables = set(inspect(engine).get_table_names())
    assert {
        "api_event_fact",
        "time_dim",
        "user_dim",
        "image_dim",
        "class_dim",
        "model_dim",
    } <= tables


def test_upgrade_is_idempotent_and_seeds_the_none_members(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    upgrade(engine)
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT class_id, class_name FROM class_dim WHERE class_key = 0")
        ).one() == (-1, "none")
        assert (
            conn.execute(text("SELECT image_id FROM image_dim WHERE image_key = 0")).scalar_one()
            == "none"
        )
        assert (
            conn.execute(text("SELECT model_name FROM model_dim WHERE model_key = 0")).scalar_one()
            == "none"
        )
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() > 0


def test_every_migration_downgrades_and_upgrades_again(tmp_path):
    from alembic import command

    from imgclass.warehouse.migrate import alembic_config

    engine = make_engine(f"sqlite:///{tmp_path / 'round.db'}")
    upgrade(engine)
    config = alembic_config(engine)
    command.downgrade(config, "0001")
    assert current_revision(engine) == "0001"
    upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
