"""Jobs already waiting get their kind's lane (issue 14: interactive work goes before paid HD,
paid HD before speculative work; atelier.service.lanes).

Until now every job was enqueued with priority 0, so a free preview ordered behind a paid HD
painting waited for all of it. The numbers are written here as they stand today (a migration
does not import the service: it must mean the same thing next year); only waiting jobs of
priority 0 change, so an operator's own choice of priority is kept.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PRIORITIES = {
    "mail.send": 400,
    "artwork.preview": 300,
    "video.stylize": 300,
    "batch.stylize": 300,
    "artwork.hd": 200,
}
WAITING = ("queued", "running")


def upgrade() -> None:
    jobs = sa.table("jobs", sa.column("kind", sa.String), sa.column("status", sa.String), sa.column("priority", sa.Integer))
    for kind, priority in PRIORITIES.items():
        op.execute(
            jobs.update()
            .where(jobs.c.kind == kind, jobs.c.status.in_(WAITING), jobs.c.priority == 0)
            .values(priority=priority)
        )


def downgrade() -> None:
    jobs = sa.table("jobs", sa.column("kind", sa.String), sa.column("status", sa.String), sa.column("priority", sa.Integer))
    for kind, priority in PRIORITIES.items():
        op.execute(
            jobs.update()
            .where(jobs.c.kind == kind, jobs.c.status.in_(WAITING), jobs.c.priority == priority)
            .values(priority=0)
        )
