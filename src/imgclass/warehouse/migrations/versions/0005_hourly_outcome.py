"""Hourly roll-up of outcomes (``agg_hour_outcome``) for hour-grain time series.

The dashboard's requests-over-time chart at hour grain otherwise groups every fact of
the range. Same columns as ``agg_day_outcome`` with an ``hour_key`` (YYYYMMDDHH, UTC);
kept current by the Recorder, filled here from the existing facts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from imgclass.warehouse.aggregates import rebuild
from imgclass.warehouse.schema import agg_hour_outcome

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

MEASURES = [
    ("events", sa.Integer()),
    ("requests", sa.Integer()),
    ("errors", sa.Integer()),
    ("time_sum", sa.Float()),
    ("time_min", sa.Float()),
    ("time_max", sa.Float()),
    ("confidence_sum", sa.Float()),
    ("confidence_count", sa.Integer()),
    ("cache_hits", sa.Integer()),
    ("fallbacks", sa.Integer()),
]


def upgrade() -> None:
    op.create_table(
        "agg_hour_outcome",
        sa.Column("hour_key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("model_key", sa.Integer(), autoincrement=False),
        sa.Column("status_code", sa.SmallInteger(), autoincrement=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("cache_hit", sa.Boolean()),
        sa.Column("is_fallback", sa.Boolean()),
        *(sa.Column(column, kind, nullable=False) for column, kind in MEASURES),
        sa.PrimaryKeyConstraint(
            "hour_key",
            "model_key",
            "status_code",
            "error_code",
            "cache_hit",
            "is_fallback",
            name="pk_agg_hour_outcome",
        ),
    )
    rebuild(op.get_bind(), (agg_hour_outcome,))


def downgrade() -> None:
    op.drop_table("agg_hour_outcome")
