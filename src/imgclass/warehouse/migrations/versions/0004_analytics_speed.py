"""Analytics at a million events: daily aggregates and a latency index.

``agg_day_class``, ``agg_day_user`` and ``agg_day_outcome`` hold the facts summed by
day and key (kept current by the Recorder, filled here from the existing facts), so
day-grain roll-ups and the dashboard summary read thousands of rows instead of
millions. ``ix_api_event_fact_latency`` lets SQLite read a percentile of the whole
range as the k-th entry of an index instead of sorting every fact (see
docs/PERFORMANCE.md for the query plans).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from imgclass.warehouse.aggregates import rebuild
from imgclass.warehouse.schema import agg_day_class, agg_day_outcome, agg_day_user

revision = "0004"
down_revision = "0003"
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


def _aggregate(name: str, *keys: sa.Column) -> None:
    op.create_table(
        name,
        sa.Column("day_key", sa.Integer(), autoincrement=False, nullable=False),
        *keys,
        *(sa.Column(column, kind, nullable=False) for column, kind in MEASURES),
        sa.PrimaryKeyConstraint("day_key", *(k.name for k in keys), name=f"pk_{name}"),
    )


def upgrade() -> None:
    _aggregate("agg_day_class", sa.Column("class_key", sa.Integer(), autoincrement=False))
    _aggregate("agg_day_user", sa.Column("user_key", sa.Integer(), autoincrement=False))
    _aggregate(
        "agg_day_outcome",
        sa.Column("model_key", sa.Integer(), autoincrement=False),
        sa.Column("status_code", sa.SmallInteger(), autoincrement=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("cache_hit", sa.Boolean()),
        sa.Column("is_fallback", sa.Boolean()),
    )
    op.create_index(
        "ix_api_event_fact_latency",
        "api_event_fact",
        ["time_taken", "timestamp_key", "user_key", "class_key"],
    )
    rebuild(op.get_bind(), (agg_day_class, agg_day_user, agg_day_outcome))


def downgrade() -> None:
    op.drop_index("ix_api_event_fact_latency", table_name="api_event_fact")
    for name in ("agg_day_outcome", "agg_day_user", "agg_day_class"):
        op.drop_table(name)
