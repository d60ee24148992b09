"""Mail is sent by jobs of the queue (kind ``mail.send``): the outbox keeps the mail and what
became of it, the job its schedule (issue 13: one queue implementation).

Mails waiting to be sent (pending, or claimed by a sender of the old kind) get their job, due
when their next try was due, so nothing queued before the upgrade is lost; then the outbox's
own schedule (``next_attempt_at`` and its index) goes. The numbers are written here as they
stand today (a migration does not import the service: it must mean the same thing next year):
the mail job's priority, and ATELIER_MAIL_MAX_ATTEMPTS's default for its attempts (the tries
a mail has had so far are kept on its row, the job's start over).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atelier.store.db import JSONType, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MAIL_JOB = "mail.send"
MAIL_PRIORITY = 400
MAIL_MAX_ATTEMPTS = 10


def upgrade() -> None:
    bind = op.get_bind()
    outbox = sa.table(
        "outbox", sa.column("id", sa.Integer), sa.column("status", sa.String), sa.column("next_attempt_at", UTCDateTime())
    )
    jobs = sa.table(
        "jobs",
        sa.column("kind", sa.String), sa.column("payload", JSONType), sa.column("status", sa.String),
        sa.column("priority", sa.Integer), sa.column("run_at", UTCDateTime()), sa.column("attempts", sa.Integer),
        sa.column("max_attempts", sa.Integer), sa.column("progress", sa.Float),
        sa.column("created_at", UTCDateTime()), sa.column("updated_at", UTCDateTime()),
    )
    waiting = bind.execute(
        sa.select(outbox.c.id, outbox.c.next_attempt_at).where(outbox.c.status.in_(["pending", "sending"])).order_by(outbox.c.id)
    ).all()
    for outbox_id, due in waiting:
        bind.execute(
            jobs.insert().values(
                kind=MAIL_JOB, payload={"outbox_id": outbox_id}, status="queued", priority=MAIL_PRIORITY,
                run_at=due, attempts=0, max_attempts=MAIL_MAX_ATTEMPTS, progress=0.0,
                created_at=due, updated_at=due,
            )
        )
    bind.execute(outbox.update().where(outbox.c.status == "sending").values(status="pending"))
    op.drop_index("ix_outbox_due", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("next_attempt_at")


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("next_attempt_at", UTCDateTime(), nullable=True))
    outbox = sa.table("outbox", sa.column("next_attempt_at", UTCDateTime()), sa.column("created_at", UTCDateTime()))
    op.execute(outbox.update().values(next_attempt_at=outbox.c.created_at))
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("next_attempt_at", existing_type=UTCDateTime(), nullable=False)
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at"])
    jobs = sa.table("jobs", sa.column("kind", sa.String))
    op.execute(jobs.delete().where(jobs.c.kind == MAIL_JOB))
