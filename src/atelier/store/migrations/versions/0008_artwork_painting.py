"""Artworks keep their preview's painting (the HD picture is painted on from it) and their HD job.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Both stay empty on rows made before: their HD job paints from the photo, as it did, and
    # the HD job id lived in parameters (nothing read it).
    with op.batch_alter_table("artworks") as batch:
        batch.add_column(sa.Column("painting_key", sa.String(512), nullable=True))
        batch.add_column(sa.Column("hd_job_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("artworks") as batch:
        batch.drop_column("hd_job_id")
        batch.drop_column("painting_key")
