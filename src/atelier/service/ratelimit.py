"""Rate limits per client address and per email, counted in the database.

A fixed window: requests of one key (``scope:kind:digest``) are counted from the start of the
current window of ATELIER_RATE_LIMIT_WINDOW_SECONDS; past the limit a request is refused until
the window ends (the refusal says when). The counter is one row per key, moved on atomically
(:mod:`atelier.store.counters`), so several web processes on one database share the counts and
two requests at once cannot both take the last allowed hit.

Keys hold a digest of the address or email, never the value: the table says nothing about who
used the service.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from atelier.store.counters import count_hit, take_back_hit

log = logging.getLogger(__name__)

#: The share of hits that also delete counters of windows long gone (keeps the table small
#: without a scheduled job).
PRUNE_PROBABILITY = 0.01


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one counted request."""

    allowed: bool
    hits: int
    limit: int
    retry_after: int  # seconds until the window ends (0 when allowed)


class RateLimitedError(Exception):
    """A request over its limit; ``retry_after`` seconds until it would be allowed."""

    def __init__(self, scope: str, kind: str, retry_after: int) -> None:
        super().__init__(f"too many {scope} requests from this {kind}; try again in {retry_after} s")
        self.scope = scope
        self.kind = kind
        self.retry_after = retry_after


def counter_key(scope: str, kind: str, value: str) -> str:
    """``scope:kind:`` and a digest of ``value`` (lower-cased and stripped: emails differ in case)."""
    digest = hashlib.sha256(value.strip().lower().encode()).hexdigest()[:40]
    return f"{scope}:{kind}:{digest}"[:128]


def hit(
    engine: Engine,
    *,
    scope: str,
    kind: str,
    value: str,
    limit: int,
    window_seconds: int,
    now: float | None = None,
) -> RateDecision:
    """Count one request of ``value`` (an address, an email) against ``limit`` per window.

    ``limit`` 0 turns the limit off (nothing is counted). Refused requests count too, so a
    client that keeps hammering stays refused until the window ends.
    """
    if limit <= 0:
        return RateDecision(True, 0, limit, 0)
    now = time.time() if now is None else now
    start = int(now) - int(now) % window_seconds
    prune = start - window_seconds if random.random() < PRUNE_PROBABILITY else None
    hits, window_start = count_hit(engine, counter_key(scope, kind, value), start, prune_before=prune)
    if hits <= limit:
        return RateDecision(True, int(hits), limit, 0)
    retry_after = max(1, int(window_start) + window_seconds - int(now))
    return RateDecision(False, int(hits), limit, retry_after)


def enforce(
    engine: Engine,
    *,
    scope: str,
    kind: str,
    value: str,
    limit: int,
    window_seconds: int,
    now: float | None = None,
) -> None:
    """:func:`hit`, raising :class:`RateLimitedError` when the request is over the limit."""
    decision = hit(engine, scope=scope, kind=kind, value=value, limit=limit, window_seconds=window_seconds, now=now)
    if not decision.allowed:
        log.warning("rate limit: %s per %s over %d (retry in %d s)", scope, kind, limit, decision.retry_after)
        raise RateLimitedError(scope, kind, decision.retry_after)


def refund(engine: Engine, *, scope: str, kind: str, value: str, window_seconds: int, now: float | None = None) -> None:
    """Take back one counted request of the current window (one that turned out to be
    legitimate: the right admin token sent as a header is counted first, so that guesses sent
    all at once cannot pass the limit before their count is known, and refunded after)."""
    now = time.time() if now is None else now
    start = int(now) - int(now) % window_seconds
    take_back_hit(engine, counter_key(scope, kind, value), start)
