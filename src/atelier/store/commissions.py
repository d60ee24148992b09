"""The commission's rows found by what the outside world knows of them (an artwork by its
public id or its preview token, a sale by the payment provider's reference, an artwork's
sales) and the commission's queries that are not plain row reads (the HD painted ahead
promoted to the paid one). Each function takes the caller's session; the rows belong to
that session."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from atelier.store.db import Artwork, Job, JobStatus, Sale, utcnow


def artwork_by_public_id(session: Session, public_id: str, *, for_update: bool = False) -> Artwork | None:
    """The artwork whose public id is ``public_id``; ``for_update`` locks its row (PostgreSQL)
    until the transaction ends, so two payment events for it take turns."""
    query = select(Artwork).where(Artwork.public_id == public_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def artwork_id_of(session: Session, public_id: str) -> int:
    """The id of the artwork whose public id is ``public_id`` (which must exist)."""
    return int(session.scalars(select(Artwork.id).where(Artwork.public_id == public_id)).one())


def artwork_with_preview_token(session: Session, token: str) -> Artwork | None:
    """The artwork whose preview link is ``token`` (compare the token again in constant time)."""
    return session.scalars(select(Artwork).where(Artwork.preview_token == token)).first()


def promote_job(session: Session, job_id: int, *, kind: str, priority: int, max_attempts: int) -> bool:
    """In the caller's transaction, make a waiting or running job a job of ``kind`` with
    ``priority`` (and at least ``max_attempts``): an HD picture being painted ahead becomes the
    paid one when its buyer pays, keeping its place and, while it runs, its work. False (nothing
    changed) when the job is no longer queued or running."""
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
        .values(
            kind=kind,
            priority=priority,
            max_attempts=func.max(Job.max_attempts, max_attempts) if _sqlite(session) else func.greatest(Job.max_attempts, max_attempts),
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    return changed == 1


def _sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def sale_by_reference(session: Session, provider: str, reference: str) -> Sale | None:
    """The sale the payment provider knows as ``reference`` (a Stripe session id, a demo one)."""
    return session.scalars(select(Sale).where(Sale.provider == provider, Sale.provider_ref == reference)).first()


def sales_of(session: Session, artwork_id: int) -> list[Sale]:
    """The artwork's sales, oldest first."""
    return list(session.scalars(select(Sale).where(Sale.artwork_id == artwork_id).order_by(Sale.id)))
