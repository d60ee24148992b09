"""Initial schema: uploads, artworks, jobs, sales, processed events, outbox, workers.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The types as the models declare them (atelier.store.db), spelled out here so that this script
# stays valid whatever the models become later.
UTC = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamps(*names: str, nullable: bool = False) -> list[sa.Column]:
    return [sa.Column(name, UTC, nullable=nullable) for name in names]


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("blob_key", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("temporary", sa.Boolean(), nullable=False),
        sa.Column("expires_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_uploads"),
        sa.UniqueConstraint("blob_key", name="uq_uploads_blob_key"),
    )
    op.create_index("ix_uploads_sha256", "uploads", ["sha256"])

    op.create_table(
        "artworks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_email", sa.String(320), nullable=False),
        sa.Column("locale", sa.String(16), nullable=False),
        sa.Column("style", sa.String(100), nullable=False),
        sa.Column("parameters", JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("content_upload_id", sa.String(32), nullable=True),
        sa.Column("preview_token", sa.String(64), nullable=False),
        sa.Column("download_token", sa.String(64), nullable=False),
        sa.Column("preview_key", sa.String(512), nullable=True),
        sa.Column("hd_key", sa.String(512), nullable=True),
        *_timestamps("created_at", "updated_at"),
        *_timestamps("preview_ready_at", "paid_at", "delivered_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["content_upload_id"],
            ["uploads.id"],
            name="fk_artworks_content_upload_id_uploads",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_artworks"),
        sa.UniqueConstraint("preview_token", name="uq_artworks_preview_token"),
        sa.UniqueConstraint("download_token", name="uq_artworks_download_token"),
    )
    op.create_index("ix_artworks_owner_email", "artworks", ["owner_email"])
    op.create_index("ix_artworks_status", "artworks", ["status"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("run_at", UTC, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", UTC, nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("progress_detail", JSON, nullable=True),
        sa.Column("preview_key", sa.String(512), nullable=True),
        sa.Column("output_key", sa.String(512), nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        *_timestamps("created_at", "updated_at"),
        *_timestamps("started_at", "finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_claim", "jobs", ["status", "priority", "run_at", "id"])
    op.create_index("ix_jobs_lease", "jobs", ["status", "lease_expires_at"])
    op.create_index("ix_jobs_kind", "jobs", ["kind"])
    op.create_index("ix_jobs_output_key", "jobs", ["output_key"])

    op.create_table(
        "sales",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("artwork_id", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("provider_ref", sa.String(255), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        *_timestamps("created_at", "updated_at"),
        sa.Column("paid_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(["artwork_id"], ["artworks.id"], name="fk_sales_artwork_id_artworks"),
        sa.PrimaryKeyConstraint("id", name="pk_sales"),
        sa.UniqueConstraint("provider", "provider_ref", name="uq_sales_provider_provider_ref"),
    )
    op.create_index("ix_sales_artwork_id", "sales", ["artwork_id"])

    op.create_table(
        "processed_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=True),
        sa.Column("received_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_processed_events"),
        sa.UniqueConstraint("provider", "event_id", name="uq_processed_events_provider_event_id"),
    )

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(200), nullable=True),
        sa.Column("to_addr", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("text_body", sa.Text(), nullable=False),
        sa.Column("html_body", sa.Text(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("sent_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("dedupe_key", name="uq_outbox_dedupe_key"),
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at"])

    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("kinds", JSON, nullable=True),
        *_timestamps("started_at", "last_seen_at"),
        sa.Column("current_job_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )
    op.create_index("ix_workers_last_seen_at", "workers", ["last_seen_at"])


def downgrade() -> None:
    for table in ("workers", "outbox", "processed_events", "sales", "jobs", "artworks", "uploads"):
        op.drop_table(table)
