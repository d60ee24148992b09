"""Operator sessions of /admin, kept in the database (the ``admin_sessions`` table).

The cookie holds 256 random bits; the table holds their SHA-256, so a copy of the database
opens nothing. A session is valid while its row exists, has not expired and was opened with the
admin token in use now (``token_digest``); signing out deletes the row, which ends the session
for every copy of the cookie, and every process sharing the database agrees at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from atelier.store.db import AdminSession, transaction

#: Longest cookie value accepted (a token_urlsafe(32) is 43 characters).
MAX_VALUE_LENGTH = 128


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _at(now: float | None) -> datetime:
    return datetime.fromtimestamp(now, UTC) if now is not None else datetime.now(UTC)


def open_session(engine: Engine, *, token_digest: str, lifetime_seconds: float, now: float | None = None) -> str:
    """A new session (the cookie's value); sessions that expired are deleted on the way."""
    value = secrets.token_urlsafe(32)
    at = _at(now)
    with transaction(engine) as session:
        session.execute(delete(AdminSession).where(AdminSession.expires_at < at))
        session.add(
            AdminSession(id=_digest(value), token_digest=token_digest, created_at=at, expires_at=at + timedelta(seconds=lifetime_seconds))
        )
    return value


def session_is_open(engine: Engine, value: str | None, *, token_digest: str, now: float | None = None) -> bool:
    """Whether ``value`` (a cookie) is a session that is open, unexpired, for this token."""
    if not value or len(value) > MAX_VALUE_LENGTH:
        return False
    with transaction(engine, read_only=True) as session:
        row = session.scalars(select(AdminSession).where(AdminSession.id == _digest(value))).first()
        if row is None:
            return False
        return row.expires_at > _at(now) and hmac.compare_digest(row.token_digest, token_digest)


def close_session(engine: Engine, value: str | None) -> bool:
    """End the session ``value`` names (signing out); whether there was one."""
    if not value or len(value) > MAX_VALUE_LENGTH:
        return False
    with transaction(engine) as session:
        return bool(session.execute(delete(AdminSession).where(AdminSession.id == _digest(value))).rowcount)
