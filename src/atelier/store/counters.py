"""Rate counters (the ``rate_counters`` table): one row per key, counted per fixed window.

:func:`count_hit` moves a counter on with a single ``INSERT ... ON CONFLICT DO UPDATE ...
RETURNING`` -- one atomic statement on SQLite (3.35+) and PostgreSQL alike -- so several web
processes on one database share the counts and two requests at once cannot both take the last
allowed hit. The policy (which key, which window, what is allowed) is
:mod:`atelier.service.ratelimit`'s.
"""

from __future__ import annotations

from sqlalchemy import case, delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from atelier.store.db import RateCounter, is_sqlite, transaction


def count_hit(engine: Engine, key: str, window_start: int, *, prune_before: int | None = None) -> tuple[int, int]:
    """Count one hit of ``key`` in the window that starts at ``window_start`` (epoch seconds):
    (hits in the counter's window, the counter's window start). ``prune_before`` also deletes
    the counters of windows that started before it."""
    insert = sqlite_insert if is_sqlite(engine) else pg_insert
    statement = insert(RateCounter).values(key=key, window_start=window_start, hits=1)
    current = RateCounter.window_start >= statement.excluded.window_start
    statement = statement.on_conflict_do_update(
        index_elements=[RateCounter.key],
        # Both SET expressions read the row as it was: a newer window starts over at 1; the
        # same (or, from a process whose clock lags, an older) window counts on.
        set_={
            "hits": case((current, RateCounter.hits + 1), else_=1),
            "window_start": case((current, RateCounter.window_start), else_=statement.excluded.window_start),
        },
    ).returning(RateCounter.hits, RateCounter.window_start)
    with transaction(engine) as session:
        hits, start = session.execute(statement).one()
        if prune_before is not None:
            session.execute(delete(RateCounter).where(RateCounter.window_start < prune_before))
    return int(hits), int(start)


def take_back_hit(engine: Engine, key: str, window_start: int) -> None:
    """Uncount one hit of ``key`` in the window that starts at ``window_start`` (if any)."""
    with transaction(engine) as session:
        session.execute(
            update(RateCounter)
            .where(RateCounter.key == key, RateCounter.window_start == window_start, RateCounter.hits > 0)
            .values(hits=RateCounter.hits - 1)
        )
