"""Backup receipts: one row per successful backup of a PostgreSQL warehouse.

The backup-age metric of every replica reads the newest, whichever host took the backup
(a Kubernetes CronJob's pod keeps no files). SQLite warehouses keep their receipt in
the data dir and leave this table empty.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backup_receipt",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(1024), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_backup_receipt"),
    )


def downgrade() -> None:
    op.drop_table("backup_receipt")
