"""The initial star schema, accounts, and the special "none" dimension members.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "time_dim",
        sa.Column("timestamp_key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("minute_start", sa.DateTime(), nullable=False),
        sa.Column("minute", sa.SmallInteger(), nullable=False),
        sa.Column("hour", sa.SmallInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("week", sa.SmallInteger(), nullable=False),
        sa.Column("month", sa.SmallInteger(), nullable=False),
        sa.Column("quarter", sa.SmallInteger(), nullable=False),
        sa.Column("year", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("timestamp_key", name="pk_time_dim"),
    )
    op.create_table(
        "user_dim",
        sa.Column("user_key", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("ip_address", sa.String(45), nullable=False),
        sa.Column("user_agent", sa.String(512), nullable=False),
        sa.PrimaryKeyConstraint("user_key", name="pk_user_dim"),
        sa.UniqueConstraint("user_id", "ip_address", "user_agent", name="uq_user_dim_natural"),
    )
    op.create_table(
        "image_dim",
        sa.Column("image_key", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(64), nullable=False),
        sa.Column("image_filename", sa.String(255), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("format", sa.String(16), nullable=True),
        sa.Column("bytes", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("image_key", name="pk_image_dim"),
        sa.UniqueConstraint("image_id", "image_filename", name="uq_image_dim_natural"),
    )
    op.create_table(
        "class_dim",
        sa.Column("class_key", sa.Integer(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("class_name", sa.String(128), nullable=False),
        sa.Column("wnid", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("class_key", name="pk_class_dim"),
        sa.UniqueConstraint("class_id", name="uq_class_dim_class_id"),
    )
    op.create_table(
        "model_dim",
        sa.Column("model_key", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("model_key", name="pk_model_dim"),
        sa.UniqueConstraint("model_name", "model_version", "sha256", name="uq_model_dim_natural"),
    )
    op.create_table(
        "api_event_fact",
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("timestamp_key", sa.BigInteger(), nullable=False),
        sa.Column("user_key", sa.Integer(), nullable=False),
        sa.Column("image_key", sa.Integer(), nullable=False),
        sa.Column("class_key", sa.Integer(), nullable=False),
        sa.Column("model_key", sa.Integer(), nullable=False),
        sa.Column("event_time", sa.DateTime(), nullable=False),
        sa.Column("time_taken", sa.Float(), nullable=False),
        sa.Column("request_count", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("status_code", sa.SmallInteger(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["timestamp_key"],
            ["time_dim.timestamp_key"],
            name="fk_api_event_fact_timestamp_key_time_dim",
        ),
        sa.ForeignKeyConstraint(
            ["user_key"], ["user_dim.user_key"], name="fk_api_event_fact_user_key_user_dim"
        ),
        sa.ForeignKeyConstraint(
            ["image_key"], ["image_dim.image_key"], name="fk_api_event_fact_image_key_image_dim"
        ),
        sa.ForeignKeyConstraint(
            ["class_key"], ["class_dim.class_key"], name="fk_api_event_fact_class_key_class_dim"
        ),
        sa.ForeignKeyConstraint(
            ["model_key"], ["model_dim.model_key"], name="fk_api_event_fact_model_key_model_dim"
        ),
        sa.PrimaryKeyConstraint("event_id", name="pk_api_event_fact"),
    )
    op.create_index("ix_api_event_fact_request_id", "api_event_fact", ["request_id"])
    op.create_index("ix_api_event_fact_timestamp_key", "api_event_fact", ["timestamp_key"])
    op.create_table(
        "api_user",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("user_id", name="pk_api_user"),
        sa.UniqueConstraint("username", name="uq_api_user_username"),
        sa.UniqueConstraint("key_hash", name="uq_api_user_key_hash"),
    )
    op.create_table(
        "service_heartbeat",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_service_heartbeat"),
    )
    # The special members that facts without an image/class/model point at (key 0).
    op.execute("INSERT INTO image_dim (image_key, image_id, image_filename) VALUES (0, 'none', '')")
    op.execute("INSERT INTO class_dim (class_key, class_id, class_name) VALUES (0, -1, 'none')")
    op.execute("INSERT INTO service_heartbeat (id, checked_at) VALUES (1, CURRENT_TIMESTAMP)")
    op.execute(
        "INSERT INTO model_dim (model_key, model_name, model_version, sha256) "
        "VALUES (0, 'none', 'none', 'none')"
    )


def downgrade() -> None:
    for table in (
        "service_heartbeat",
        "api_user",
        "api_event_fact",
        "model_dim",
        "class_dim",
        "image_dim",
        "user_dim",
        "time_dim",
    ):
        op.drop_table(table)
