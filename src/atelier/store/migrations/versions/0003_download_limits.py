"""Artworks keep their HD download link's expiry, its use count and its limit.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atelier.store.db import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artworks") as batch:
        batch.add_column(sa.Column("download_expires_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("download_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("download_limit", sa.Integer(), nullable=True))
    # Rows made before this revision have not been downloaded.
    op.execute("UPDATE artworks SET download_count = 0 WHERE download_count IS NULL")
    with op.batch_alter_table("artworks") as batch:
        batch.alter_column("download_count", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("artworks") as batch:
        batch.drop_column("download_limit")
        batch.drop_column("download_count")
        batch.drop_column("download_expires_at")
