"""Artworks get a random public id (what the API and the status page use) and their current job.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artworks") as batch:
        batch.add_column(sa.Column("public_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("job_id", sa.Integer(), nullable=True))
    # Rows made before this revision get a random id too (the same kind the models make).
    artworks = sa.table("artworks", sa.column("id", sa.Integer()), sa.column("public_id", sa.String(32)))
    conn = op.get_bind()
    for (artwork_id,) in conn.execute(sa.select(artworks.c.id).where(artworks.c.public_id.is_(None))).all():
        conn.execute(
            artworks.update().where(artworks.c.id == artwork_id).values(public_id=uuid.uuid4().hex)
        )
    with op.batch_alter_table("artworks") as batch:
        batch.alter_column("public_id", existing_type=sa.String(32), nullable=False)
        batch.create_unique_constraint("uq_artworks_public_id", ["public_id"])


def downgrade() -> None:
    with op.batch_alter_table("artworks") as batch:
        batch.drop_constraint("uq_artworks_public_id", type_="unique")
        batch.drop_column("job_id")
        batch.drop_column("public_id")
