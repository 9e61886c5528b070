"""Concept hierarchy (WordNet hypernyms of the ImageNet classes) and class labels.

Snowflakes the class dimension: ``concept_dim`` holds every synset on the chosen
hypernym path of some class, ``class_concept`` maps each class and depth to its
ancestor there. Both are filled from ``warehouse/data/imagenet_concepts.json.gz``
(made by scripts/build_concepts.py). ``class_dim.label`` is the short name the
analytics API filters on, backfilled for existing rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from imgclass.warehouse.concepts import class_label, imagenet_concepts

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    concept_dim = op.create_table(
        "concept_dim",
        sa.Column("concept_key", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("wnid", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("depth", sa.SmallInteger(), nullable=False),
        sa.Column("parent_key", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_key"],
            ["concept_dim.concept_key"],
            name="fk_concept_dim_parent_key_concept_dim",
        ),
        sa.PrimaryKeyConstraint("concept_key", name="pk_concept_dim"),
        sa.UniqueConstraint("wnid", name="uq_concept_dim_wnid"),
    )
    class_concept = op.create_table(
        "class_concept",
        sa.Column("class_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("depth", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("concept_key", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["concept_key"],
            ["concept_dim.concept_key"],
            name="fk_class_concept_concept_key_concept_dim",
        ),
        sa.PrimaryKeyConstraint("class_id", "depth", name="pk_class_concept"),
    )
    op.create_index("ix_class_concept_concept_key", "class_concept", ["concept_key"])
    with op.batch_alter_table("class_dim") as batch:
        batch.add_column(sa.Column("label", sa.String(128), nullable=False, server_default=""))

    data = imagenet_concepts()
    keys: dict[str, int] = {}
    concepts, mapping = [], []
    # Keys in order of first appearance along the paths: parents always come first.
    for class_id in sorted(data.paths):
        path = data.paths[class_id]
        for depth, concept in enumerate(path):
            if concept.wnid not in keys:
                keys[concept.wnid] = len(keys) + 1
                parent = keys[path[depth - 1].wnid] if depth else None
                concepts.append(
                    {
                        "concept_key": keys[concept.wnid],
                        "wnid": concept.wnid,
                        "name": concept.name,
                        "depth": depth,
                        "parent_key": parent,
                    }
                )
        for depth in range(data.max_depth + 1):
            concept = path[min(depth, len(path) - 1)]
            mapping.append(
                {"class_id": class_id, "depth": depth, "concept_key": keys[concept.wnid]}
            )
    op.bulk_insert(concept_dim, concepts)
    op.bulk_insert(class_concept, mapping)

    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT class_key, class_id, class_name FROM class_dim")).all()
    if rows:
        conn.execute(
            sa.text("UPDATE class_dim SET label = :label WHERE class_key = :key"),
            [{"key": key, "label": class_label(cid, name)} for key, cid, name in rows],
        )


def downgrade() -> None:
    with op.batch_alter_table("class_dim") as batch:
        batch.drop_column("label")
    op.drop_index("ix_class_concept_concept_key", table_name="class_concept")
    op.drop_table("class_concept")
    op.drop_table("concept_dim")
