"""What the operator view (/admin, :mod:`atelier.service.admin`) reads beyond the queue's own
verbs: recent jobs and failures, recent artworks, and putting a retried job's artwork back in
line. Each function takes the caller's session; the rows it returns belong to that session."""

from __future__ import annotations

from sqlalchemy import desc, select
from sqlalchemy.orm import Session

from atelier.store.db import Artwork, Job, JobStatus


def recent_jobs(session: Session, *, status: str | None = None, limit: int = 50) -> list[Job]:
    """The newest jobs (of ``status``, when it is one), newest first."""
    query = select(Job).order_by(desc(Job.id)).limit(limit)
    if status in JobStatus.ALL:
        query = query.where(Job.status == status)
    return list(session.scalars(query))


def recent_failures(session: Session, *, limit: int = 20) -> list[Job]:
    """Failed and dead jobs, the latest to change first."""
    query = select(Job).where(Job.status.in_([JobStatus.FAILED, JobStatus.DEAD])).order_by(desc(Job.updated_at)).limit(limit)
    return list(session.scalars(query))


def recent_artworks(session: Session, *, limit: int = 20) -> list[Artwork]:
    """The newest artworks, newest first."""
    return list(session.scalars(select(Artwork).order_by(desc(Artwork.id)).limit(limit)))


def artworks_of_job(session: Session, job_id: int) -> list[Artwork]:
    """The artworks whose painting job is ``job_id``."""
    return list(session.scalars(select(Artwork).where(Artwork.job_id == job_id)))
