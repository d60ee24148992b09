"""Uploads (the ``uploads`` table): reads by something other than the id."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from atelier.store.db import Upload


def upload_at(session: Session, blob_key: str) -> Upload | None:
    """The upload whose file is (or is to be) at ``blob_key``."""
    return session.scalars(select(Upload).where(Upload.blob_key == blob_key)).first()
