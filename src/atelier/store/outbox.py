"""The outbox (the ``outbox`` table): each mail the product sends, written in the same
transaction as the change it announces, and what became of it (for the operator). The sending
itself is a job of the queue (``mail.send``, :mod:`atelier.service.mail`); these rows say what
the operator needs to see: sent, pending with the last error, or dead."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, desc, func, select, update
from sqlalchemy.orm import Session

from atelier.store.db import OutboxEmail, added_key, transaction, utcnow

#: The longest error kept on a row.
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class OutboxMail:
    """One mail as it is sent."""

    id: int
    to_addr: str
    subject: str
    text_body: str
    html_body: str | None


def add(
    session: Session, *, dedupe_key: str | None, to_addr: str, subject: str, text_body: str, html_body: str | None
) -> int | None:
    """Add a pending mail in the caller's transaction: its id, or None when a mail with
    ``dedupe_key`` is already there."""
    values = {
        "dedupe_key": dedupe_key,
        "to_addr": to_addr,
        "subject": subject,
        "text_body": text_body,
        "html_body": html_body,
        "status": "pending",
        "attempts": 0,
        "created_at": utcnow(),
    }
    key = added_key(session, OutboxEmail.__table__, values, unique=["dedupe_key"])
    return None if key is None else int(key)


def mail_to_send(engine: Engine, outbox_id: int) -> OutboxMail | None:
    """The mail, unless it was sent already (or is not there)."""
    with transaction(engine, read_only=True) as session:
        row = session.get(OutboxEmail, outbox_id)
        if row is None or row.status == "sent":
            return None
        return OutboxMail(id=row.id, to_addr=row.to_addr, subject=row.subject, text_body=row.text_body, html_body=row.html_body)


def record_sent(engine: Engine, outbox_id: int, *, attempts: int) -> None:
    """The mail left (at the ``attempts``-th try)."""
    with transaction(engine) as session:
        session.execute(
            update(OutboxEmail)
            .where(OutboxEmail.id == outbox_id)
            .values(status="sent", attempts=attempts, sent_at=utcnow(), last_error=None)
        )


def record_failure(engine: Engine, outbox_id: int, *, attempts: int, error: str, dead: bool) -> None:
    """A send failed: the error, and ``dead`` when it is not tried again. A mail already sent
    (by a second run of its job, after this one's lease ran out) stays sent."""
    with transaction(engine) as session:
        session.execute(
            update(OutboxEmail)
            .where(OutboxEmail.id == outbox_id, OutboxEmail.status != "sent")
            .values(status="dead" if dead else "pending", attempts=attempts, last_error=error[-MAX_ERROR_CHARS:])
        )


def counts(session: Session) -> dict[str, int]:
    """Mails per status."""
    return {status: int(n) for status, n in session.execute(select(OutboxEmail.status, func.count()).group_by(OutboxEmail.status))}


def dead_mails(session: Session, *, limit: int = 10) -> list[OutboxEmail]:
    """Mails given up on, newest first."""
    return list(session.scalars(select(OutboxEmail).where(OutboxEmail.status == "dead").order_by(desc(OutboxEmail.id)).limit(limit)))
