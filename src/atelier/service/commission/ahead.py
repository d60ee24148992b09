"""The HD picture painted ahead of payment, and what a payment queues.

When the preview is ready, its HD picture is queued in the speculative lane
(``artwork.hd_ahead``, :mod:`atelier.service.lanes`): a worker paints it when nothing else
waits and hands it back to the queue as soon as anything does. It is stored and mailed to
nobody. When the buyer pays, :func:`queue_paid_hd` looks at how far it got:

* painted: a paid HD job that finds the picture and only sends the download mail;
* queued or painting: that job becomes the paid one (the paid lane's priority and attempts),
  keeping its place and, if it is painting, its work;
* not there (off, failed, too old): a paid HD job that paints it.

Both sides run in transactions that hold the artwork's row, so a payment and the end of an
ahead painting cannot miss each other: either the payment sees the stored picture, or the
painting sees the payment and delivers.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from atelier.service.commission.stages import HD, HD_AHEAD
from atelier.service.commission.status import ArtworkStatus
from atelier.service.lanes import priority_of
from atelier.store.commissions import promote_job
from atelier.store.db import Artwork


def queue_hd_ahead(session: Session, artwork: Artwork) -> int | None:
    """Queue ``artwork``'s HD picture in the speculative lane, once per artwork; its job id, or
    None when it has one already or is sold."""
    if artwork.hd_job_id is not None or artwork.status in ArtworkStatus.SOLD:
        return None
    artwork.hd_job_id = HD_AHEAD.enqueue(session, artwork)
    return artwork.hd_job_id


def queue_paid_hd(session: Session, artwork: Artwork) -> int:
    """The paid HD job of ``artwork`` (just marked paid, in the caller's transaction): the ahead
    job promoted, or a new one. Its id."""
    ahead = artwork.hd_job_id
    if artwork.hd_key is None and ahead is not None and promote_job(
        session, ahead, kind=HD.job_kind, priority=priority_of(HD.job_kind), max_attempts=HD.attempts
    ):
        return ahead
    artwork.hd_job_id = HD.enqueue(session, artwork)
    return artwork.hd_job_id
