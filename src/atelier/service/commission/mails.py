"""The commission's mails to the artwork's owner."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from atelier.service.context import Services
from atelier.store.db import Artwork


def mail_owner(services: Services, session: Session, artwork: Artwork, *, template: str, event: str, **fields: Any) -> None:
    """Queue ``template`` for the artwork's owner, in their language, in ``session``'s
    transaction; once per artwork and ``event`` however often the caller runs (a dedupe key).
    Every mail names the style (its title, or its name once it has left the catalog)."""
    entry = services.catalog.get(artwork.style)
    services.mailer.queue_mail(
        session,
        to=artwork.owner_email,
        template=template,
        locale=artwork.locale,
        dedupe_key=f"artwork:{artwork.id}:{event}",
        style=entry.title(artwork.locale) if entry is not None else artwork.style,
        **fields,
    )
