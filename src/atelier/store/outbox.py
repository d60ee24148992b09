"""The outbox (the ``outbox`` table): each mail the product sends, written in the same
transaction as the change it announces, and what became of it (for the operator)."""

from __future__ import annotations

from sqlalchemy import desc, func, select
from sqlalchemy.orm import Session

from atelier.store.db import OutboxEmail


def counts(session: Session) -> dict[str, int]:
    """Mails per status."""
    return {status: int(n) for status, n in session.execute(select(OutboxEmail.status, func.count()).group_by(OutboxEmail.status))}


def dead_mails(session: Session, *, limit: int = 10) -> list[OutboxEmail]:
    """Mails given up on, newest first."""
    return list(session.scalars(select(OutboxEmail).where(OutboxEmail.status == "dead").order_by(desc(OutboxEmail.id)).limit(limit)))
