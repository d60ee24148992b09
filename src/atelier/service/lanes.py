"""Lanes: which job goes first, and which running job steps aside for it (issue 14, item 2).

Every job kind has a priority (higher runs first: the queue claims by priority, then age) and a
way of being pre-empted while it runs:

* interactive work -- a free preview, an instant video, a batch -- and mail go first and are
  never pre-empted (they take seconds to a minute);
* a paid HD painting (tens of minutes on two cores) *pauses*: between two iterations its worker
  runs the waiting interactive job to its end in the same thread, then carries on where it was
  (:mod:`atelier.service.worker`). Nothing is lost and no checkpoint is needed; the price is the
  memory of both at once and an HD that is late by the interlude;
* speculative work (an HD painted ahead of payment) is *released*: it hands its job back to the
  queue (attempt not counted, its place in the line kept, any checkpoint kept) and the worker
  claims what waits. It holds nothing while others run, and a paid HD may go before it.

With one worker on two cores there is no second lane of CPU to give: what a pause buys is
latency for the interactive job (it starts within about a second of the next iteration) at the
cost of the long job's wall time. A second worker would share the same two cores, and both
jobs would run at half speed at once (and torch's threads would fight): a preview that takes
20 s alone would take 40 s or more, and the HD would still be slowed by the same amount.

Names are registered here, not in each service, so that an enqueue in the web process (which
never imports the handlers) and the worker agree on every kind's lane.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: A short job the person who asked for it is waiting on; mail goes before everything (it takes
#: milliseconds and someone is waiting for it too).
MAIL = 400
INTERACTIVE = 300
#: A kind nobody registered: after the interactive work, before paid HD.
DEFAULT = 250
PAID = 200
SPECULATIVE = 100

Preempt = Literal["pause", "release"] | None


@dataclass(frozen=True)
class Lane:
    """A job kind's priority and how it steps aside for a job of a higher priority: ``pause``
    (the worker runs that job in between, the long one carries on), ``release`` (handed back to
    the queue, resumed later) or None (never)."""

    priority: int
    preempt: Preempt = None


LANES: dict[str, Lane] = {
    "artwork.preview": Lane(INTERACTIVE),
    "video.stylize": Lane(INTERACTIVE),
    "video.chunk": Lane(INTERACTIVE),  # a part of a long clip (service/videos.py)
    "batch.stylize": Lane(INTERACTIVE),
    "mail.send": Lane(MAIL),
    "artwork.hd": Lane(PAID, "pause"),
    "artwork.hd_ahead": Lane(SPECULATIVE, "release"),
}


def register(kind: str, priority: int, *, preempt: Preempt = None) -> Lane:
    """Give ``kind`` a lane (a new job kind calls this where it defines its name)."""
    if preempt not in (None, "pause", "release"):
        raise ValueError(f"preempt must be 'pause', 'release' or None, not {preempt!r}")
    lane = LANES[kind] = Lane(int(priority), preempt)
    return lane


def lane_of(kind: str) -> Lane:
    """The lane of ``kind`` (:data:`DEFAULT`, never pre-empted, for a kind nobody registered)."""
    return LANES.get(kind) or Lane(DEFAULT)


def priority_of(kind: str) -> int:
    """The priority a job of ``kind`` is enqueued with."""
    return lane_of(kind).priority


__all__ = ["DEFAULT", "INTERACTIVE", "LANES", "MAIL", "PAID", "SPECULATIVE", "Lane", "lane_of", "priority_of", "register"]
