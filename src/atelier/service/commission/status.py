"""An artwork's status: the values, and the moves between them in one table.

    queued -> painting -> preview_ready -> paid -> hd_painting -> delivered
       ^         |  \\                       ^          |
       +---------+   -> failed              +----------+   (an attempt that stops: back a step)

The preview's side is :mod:`atelier.service.commission.job` (queued, painting, preview_ready,
failed); the sale's is :func:`atelier.service.payments.record_payment` (paid) and the HD job
(hd_painting, delivered). A status is stored as its plain string (``StrEnum``), so rows, JSON
and templates see the same words as before.

Every change goes through :func:`move`: an event and the statuses it applies to. A move that the
table does not allow changes nothing and says so (False): a preview job that runs again after the
artwork was sold keeps the sale's status, a failure after the preview was ready does not undo it.
"""

from __future__ import annotations

import enum
from typing import Any


class ArtworkStatus(enum.StrEnum):
    """What the buyer sees: the painting's progress, then the sale's."""

    QUEUED = "queued"
    PAINTING = "painting"
    PREVIEW_READY = "preview_ready"
    FAILED = "failed"
    PAID = "paid"  # the payment is recorded and the HD job queued
    HD_PAINTING = "hd_painting"
    DELIVERED = "delivered"  # the HD picture is stored and its download link mailed

    #: Nothing more happens to the preview (a paid artwork's status page stops following it).
    FINAL = enum.nonmember(frozenset({"preview_ready", "failed", "paid", "hd_painting", "delivered"}))
    #: The preview exists and has been paid for.
    SOLD = enum.nonmember(frozenset({"paid", "hd_painting", "delivered"}))


class Event(enum.StrEnum):
    """What happens to an artwork."""

    PREVIEW_STARTED = "preview_started"  # a worker began painting the preview
    PREVIEW_STOPPED = "preview_stopped"  # that attempt stopped or failed; the job is queued again
    PREVIEW_FAILED = "preview_failed"  # the preview job failed for good
    PREVIEW_DONE = "preview_done"  # the preview is stored (and mailed)
    PAID = "paid"  # a payment is recorded
    HD_STARTED = "hd_started"  # a worker began painting the paid HD picture
    HD_STOPPED = "hd_stopped"  # that attempt stopped or failed
    HD_DONE = "hd_done"  # the HD picture is stored and its link mailed


S = ArtworkStatus
#: event -> {status it applies to: status after}. Anything else: the status stays.
TRANSITIONS: dict[Event, dict[ArtworkStatus, ArtworkStatus]] = {
    Event.PREVIEW_STARTED: {S.QUEUED: S.PAINTING, S.PAINTING: S.PAINTING, S.FAILED: S.PAINTING, S.PREVIEW_READY: S.PAINTING},
    Event.PREVIEW_STOPPED: {S.PAINTING: S.QUEUED},
    Event.PREVIEW_FAILED: {S.QUEUED: S.FAILED, S.PAINTING: S.FAILED, S.FAILED: S.FAILED},
    Event.PREVIEW_DONE: {
        S.QUEUED: S.PREVIEW_READY, S.PAINTING: S.PREVIEW_READY, S.FAILED: S.PREVIEW_READY, S.PREVIEW_READY: S.PREVIEW_READY,
    },
    Event.PAID: {S.PREVIEW_READY: S.PAID},
    Event.HD_STARTED: {S.PAID: S.HD_PAINTING, S.HD_PAINTING: S.HD_PAINTING, S.DELIVERED: S.HD_PAINTING},
    Event.HD_STOPPED: {S.HD_PAINTING: S.PAID},
    Event.HD_DONE: {S.PAID: S.DELIVERED, S.HD_PAINTING: S.DELIVERED, S.DELIVERED: S.DELIVERED},
}
del S


def next_status(status: str, event: Event) -> ArtworkStatus | None:
    """The status ``event`` moves ``status`` to, or None when the table does not allow it."""
    try:
        current = ArtworkStatus(status)
    except ValueError:
        return None
    return TRANSITIONS[event].get(current)


def move(artwork: Any, event: Event) -> bool:
    """Apply ``event`` to ``artwork`` (anything with a ``status``: a row in the caller's
    transaction): True when the table allows it (the status is then set), False when it leaves
    the status as it is."""
    after = next_status(artwork.status, event)
    if after is None:
        return False
    artwork.status = after
    return True
