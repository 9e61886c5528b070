"""Operations: cache hits, fallback answers, image brightness, and ground-truth feedback.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER a table to add constrained columns in place.
    with op.batch_alter_table("api_event_fact") as batch:
        batch.add_column(
            sa.Column("cache_hit", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("is_fallback", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.add_column("image_dim", sa.Column("brightness", sa.Float(), nullable=True))
    op.create_table(
        "prediction_feedback",
        sa.Column("feedback_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("true_class_key", sa.Integer(), nullable=False),
        sa.Column("is_correct", sa.Boolean(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["api_event_fact.event_id"],
            name="fk_prediction_feedback_event_id_api_event_fact",
        ),
        sa.ForeignKeyConstraint(
            ["true_class_key"],
            ["class_dim.class_key"],
            name="fk_prediction_feedback_true_class_key_class_dim",
        ),
        sa.PrimaryKeyConstraint("feedback_id", name="pk_prediction_feedback"),
        sa.UniqueConstraint("event_id", name="uq_prediction_feedback_event_id"),
    )


def downgrade() -> None:
    op.drop_table("prediction_feedback")
    op.drop_column("image_dim", "brightness")
    with op.batch_alter_table("api_event_fact") as batch:
        batch.drop_column("is_fallback")
        batch.drop_column("cache_hit")
