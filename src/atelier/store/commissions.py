"""The commission's rows found by what the outside world knows of them: an artwork by its
public id or its preview token, a sale by the payment provider's reference. Each function
takes the caller's session; the rows belong to that session."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from atelier.store.db import Artwork


def artwork_by_public_id(session: Session, public_id: str, *, for_update: bool = False) -> Artwork | None:
    """The artwork whose public id is ``public_id``; ``for_update`` locks its row (PostgreSQL)
    until the transaction ends, so two payment events for it take turns."""
    query = select(Artwork).where(Artwork.public_id == public_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def artwork_with_preview_token(session: Session, token: str) -> Artwork | None:
    """The artwork whose preview link is ``token`` (compare the token again in constant time)."""
    return session.scalars(select(Artwork).where(Artwork.preview_token == token)).first()
