"""The memory budget of decoding users' pictures, shared by every request and job of a process.

The pixel limit (ATELIER_MAX_IMAGE_PIXELS) bounds one picture, not many: a PNG of 128 KB may
declare 6300x6300 pixels (under the 40 MP limit) and cost over 300 MiB to decode, and six at once
took a server from 870 to 2,477 MiB. So each decode first takes its estimated peak
(:func:`atelier.art.blocks.images.decode_cost`, from the header alone) out of ATELIER_DECODE_MEMORY_MB,
waits up to ATELIER_DECODE_WAIT_SECONDS for room, and gives it back when the picture is decoded.
A request that finds no room in time is refused with :class:`DecodeBusyError` (503 with
Retry-After); a painting job that does is handed back like one that meets an outage.

The budget is counted in bytes, not in threads: the thread pool runs dozens of requests at once,
and forty phone photos cost less than two pictures at the pixel limit. A picture whose estimate
alone exceeds the budget is decoded when nothing else is (never refused for its size: the pixel
limit says what is too big). What bounds is the transient peak of decoding; the decoded RGB
picture (3 bytes a pixel) then belongs to its caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from atelier.service.errors import ServiceError

log = logging.getLogger(__name__)

#: Seconds a client refused for lack of room is asked to wait (Retry-After).
RETRY_AFTER = 5


class DecodeBusyError(ServiceError):
    """No room in the decoding budget within the wait: the server is busy decoding other
    pictures. The same request succeeds a little later."""


class DecodeBudget:
    """A counting semaphore of bytes. Thread-safe; one per process (``Services.decode_budget``)."""

    def __init__(self, budget_bytes: int, *, wait_seconds: float) -> None:
        self.budget = max(1, int(budget_bytes))
        self.wait_seconds = wait_seconds
        self.in_use = 0
        self.peak_in_use = 0
        self.refused = 0
        self._room = threading.Condition()

    @contextmanager
    def reserve(self, cost: int, *, wait: float | None = None) -> Iterator[None]:
        """Hold ``cost`` bytes of the budget for the ``with`` block; wait up to ``wait`` seconds
        (default: the budget's own) for room, then :class:`DecodeBusyError`."""
        cost = max(0, int(cost))
        if cost == 0:
            yield
            return
        deadline = time.monotonic() + (self.wait_seconds if wait is None else wait)
        with self._room:
            # Alone, any picture fits (the pixel limit judges size); otherwise it must fit.
            while self.in_use > 0 and self.in_use + cost > self.budget:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.refused += 1
                    log.warning(
                        "decoding refused: %.0f MiB of %.0f MiB in use, this picture needs %.0f MiB (ATELIER_DECODE_MEMORY_MB)",
                        self.in_use / 2**20, self.budget / 2**20, cost / 2**20,
                    )
                    raise DecodeBusyError("the server is busy with other pictures; try again in a moment")
                self._room.wait(left)
            self.in_use += cost
            self.peak_in_use = max(self.peak_in_use, self.in_use)
        try:
            yield
        finally:
            with self._room:
                self.in_use -= cost
                self._room.notify_all()
