"""Download links of sold artworks (the ``download_*`` columns of ``artworks``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from atelier.store.db import Artwork


def artwork_of_download(session: Session, token: str) -> Artwork | None:
    """The artwork whose download link is ``token`` (compare the token again in constant time)."""
    return session.scalars(select(Artwork).where(Artwork.download_token == token)).first()


def spend_download(session: Session, artwork_id: int, *, limit: int, now: datetime) -> bool:
    """Count one use of the artwork's download link if it has uses left and has not expired;
    whether it had. One statement decides: of two requests for the last use, one gets the row,
    the other does not."""
    spent = session.execute(
        update(Artwork)
        .where(
            Artwork.id == artwork_id,
            Artwork.download_count < limit,
            or_(Artwork.download_expires_at.is_(None), Artwork.download_expires_at > now),
        )
        .values(download_count=Artwork.download_count + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    return spent == 1
