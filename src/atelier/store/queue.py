"""The job queue: one contract, two backends (DESIGN.md, "The queue contract").

At-least-once, with leases. A worker *claims* jobs; a claim is a lease until
``lease_expires_at``, kept alive by a heartbeat thread (:class:`Heartbeat`). A worker that dies
stops renewing, and once the lease runs out another worker claims the job again. So a job can run
twice (a worker can die after writing its output but before recording ``done``); exactly-once
would need the output and the state change in one transaction, which blobs in S3 cannot join.
Jobs therefore write to deterministic keys: a second run overwrites, never duplicates.

Every write a worker makes is *fenced*: ``WHERE id = :id AND lease_owner = :me AND status =
'running'``. A worker whose lease ran out and whose job was reclaimed cannot complete, fail,
release or report progress on it any more; the call returns False (None for :meth:`fail`) and
the worker should drop the job.

Claiming, per backend:

- PostgreSQL: ``WITH picked AS MATERIALIZED (SELECT id ... FOR UPDATE SKIP LOCKED LIMIT n)
  UPDATE jobs ... FROM picked ... RETURNING``. Many workers on many machines claim at once and
  never wait for each other: rows another claimer has locked are skipped, not waited for.
- SQLite: ``UPDATE jobs ... WHERE id IN (SELECT id ... LIMIT n) RETURNING`` inside ``BEGIN
  IMMEDIATE`` (make_engine does that for every write transaction). SQLite has one writer at a
  time whatever we do; taking the write lock at BEGIN makes claimers queue up on busy_timeout
  instead of failing with SQLITE_BUSY when a read lock cannot be upgraded.

Time: on PostgreSQL every timestamp the queue writes or compares is the server's ``now()``, so
workers on machines with skewed clocks agree on when a lease ends. SQLite lives on one machine,
so its clock is the local one.

Attempts count claims: a claim (or a reclaim after a lease ran out) adds one; :meth:`release`
(SIGTERM: give the job back) takes it back. A job whose lease runs out with no attempts left goes
to ``dead`` instead of being claimed again, so a job that crashes its worker every time cannot
take the whole fleet down one worker at a time.

The SQL lives here and only here; the rest of the product calls these functions.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Engine,
    Float,
    Integer,
    Interval,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from atelier.store.db import Job, JobStatus, JSONType, UTCDateTime, Worker

log = logging.getLogger(__name__)

jobs = cast(Table, Job.__table__)
workers = cast(Table, Worker.__table__)

DEFAULT_MAX_ATTEMPTS = 5
NOTIFY_CHANNEL = "atelier_jobs"
MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class JobInfo:
    """A snapshot of one job row."""

    id: int
    kind: str
    payload: dict[str, Any]
    status: str
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    progress: float
    progress_detail: dict[str, Any] | None
    preview_key: str | None
    output_key: str | None
    result: dict[str, Any] | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class JobInLine:
    """A job that goes before another one (:meth:`JobQueue.ahead_of`): enough to estimate
    how long it will take."""

    id: int
    kind: str
    status: str
    priority: int
    progress: float
    progress_detail: dict[str, Any] | None
    started_at: datetime | None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits ``base * factor**(n-1)`` seconds (at most
    ``max_seconds``), less a random share of up to ``jitter`` of it, so that jobs that failed
    together (the database was down for a minute) do not all come back in the same second."""

    base_seconds: float = 10.0
    factor: float = 2.0
    max_seconds: float = 3600.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
        raw = min(self.max_seconds, self.base_seconds * self.factor ** max(0, attempt - 1))
        share = (rng or random).random() * self.jitter
        return raw * (1.0 - share)


@dataclass(frozen=True)
class QueueStats:
    """How the queue stands."""

    counts: dict[str, dict[str, int]]  # kind -> status -> number of jobs
    oldest_queued_age: float | None  # seconds the oldest due, queued job has waited
    expired_leases: int  # running jobs whose lease has run out (their worker died?)

    def by_status(self) -> dict[str, int]:
        """Jobs per status, every kind together (every status present, zeros included)."""
        total = dict.fromkeys(JobStatus.ALL, 0)
        for per_status in self.counts.values():
            for status, n in per_status.items():
                total[status] = total.get(status, 0) + n
        return total


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as it last reported itself."""

    id: str
    host: str
    pid: int
    kinds: list[str] | None
    started_at: datetime
    last_seen_at: datetime
    current_job_id: int | None


# ------------------------------------------------------------------------------------------------
# the SQL, all of it, built once per backend
#
# Building SQLAlchemy constructs costs more Python time than running them, and a worker pays two
# transactions per job; so every statement is built once, with bind parameters, and reused.
#
# Time: PostgreSQL statements use the server's now() (``later(name)`` is now() plus an interval
# parameter); SQLite statements take ``:now`` and the times after it as parameters from this
# machine's clock. :meth:`_SQL.times` makes the parameters for either.


class _SQL:
    def __init__(self, sqlite: bool) -> None:
        self.sqlite = sqlite
        now: ColumnElement[datetime]
        if sqlite:
            now = bindparam("now", type_=UTCDateTime())

            def later(name: str) -> ColumnElement[datetime]:
                return bindparam(name, type_=UTCDateTime())

        else:
            now = func.now(type_=UTCDateTime())

            def later(name: str) -> ColumnElement[datetime]:
                return now + bindparam(name, type_=Interval())

        j = jobs.c
        job_id = bindparam("job_id", type_=Integer())
        worker = bindparam("worker", type_=String())
        # None binds as SQL NULL (not JSON 'null'), so that coalesce() keeps the old value.
        json_or_null = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
        # The fence every worker write goes through: still mine, still running.
        fenced = and_(j.id == job_id, j.lease_owner == worker, j.status == JobStatus.RUNNING)
        expired = and_(j.status == JobStatus.RUNNING, j.lease_expires_at < now)
        # Queued and due, or running with a lease that ran out and attempts left (a reclaim).
        runnable = or_(
            and_(j.status == JobStatus.QUEUED, j.run_at <= now),
            and_(expired, j.attempts < j.max_attempts),
        )
        of_kinds = j.kind.in_(bindparam("kinds", expanding=True))
        claim_order = (j.priority.desc(), j.run_at, j.id)

        self.enqueue = (
            insert(jobs)
            .values(
                kind=bindparam("kind_"),
                payload=bindparam("payload_", type_=JSONType),
                status=JobStatus.QUEUED,
                priority=bindparam("priority_", type_=Integer()),
                run_at=func.coalesce(bindparam("run_at_", type_=UTCDateTime()), now),
                attempts=0,
                max_attempts=bindparam("max_attempts_", type_=Integer()),
                progress=0.0,
                output_key=bindparam("output_key_", type_=String()),
                created_at=now,
                updated_at=now,
            )
            .returning(j.id, sort_by_parameter_order=True)
        )

        # A job whose lease runs out on its last attempt is buried, not claimed again.
        self.bury = {
            filtered: update(jobs)
            .where(expired, j.attempts >= j.max_attempts, of_kinds if filtered else true())
            .values(
                status=JobStatus.DEAD,
                last_error=func.coalesce(j.last_error + "\n", "") + LEASE_EXPIRED,
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
            )
            for filtered in (False, True)
        }

        # A claim may take only jobs above a priority (a running job's worker looking for the
        # interactive work that should go before it, see atelier.service.worker).
        above = j.priority > bindparam("above", type_=Integer())
        self.claim = {}
        for filtered in (False, True):
            candidates = (
                select(j.id)
                .where(runnable, of_kinds if filtered else true(), above)
                .order_by(*claim_order)
                .limit(bindparam("limit", type_=Integer()))
            )
            if sqlite:
                # Under BEGIN IMMEDIATE nobody else writes until we commit: no locking needed.
                claim = update(jobs).where(j.id.in_(candidates.scalar_subquery()))
            else:
                # MATERIALIZED: the set is picked (and locked) once, whatever the planner would
                # prefer; rows other claimers have locked are skipped, not waited for.
                picked = (
                    candidates.with_for_update(skip_locked=True)
                    .cte("picked")
                    .prefix_with("MATERIALIZED")
                )
                claim = update(jobs).where(j.id == picked.c.id)
            self.claim[filtered] = claim.values(
                status=JobStatus.RUNNING,
                lease_owner=worker,
                lease_expires_at=later("lease_until"),
                attempts=j.attempts + 1,
                # progress is kept: a job handed back (pre-empted, the worker stopping) and
                # claimed again resumes from where it was, and a job's progress never goes down.
                started_at=now,
                updated_at=now,
            ).returning(*jobs.c)

        self.heartbeat = (
            update(jobs)
            .where(fenced)
            .values(lease_expires_at=later("lease_until"), updated_at=now)
        )
        self.progress = (
            update(jobs)
            .where(fenced)
            .values(
                # Never down: a retry that starts over, a pass that restarts, a second
                # worker's report all leave the bar where it was (issue 14: "progress you can
                # trust"); the detail says what is happening now.
                progress=_greatest(sqlite, j.progress, bindparam("progress_", type_=Float())),
                progress_detail=func.coalesce(
                    bindparam("detail_", type_=json_or_null), j.progress_detail
                ),
                preview_key=func.coalesce(bindparam("preview_key_", type_=String()), j.preview_key),
                updated_at=now,
            )
        )
        self.complete = (
            update(jobs)
            .where(fenced)
            .values(
                status=JobStatus.DONE,
                progress=1.0,
                result=bindparam("result_", type_=json_or_null),
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
            )
        )
        self.attempts_of_mine = select(j.attempts, j.max_attempts).where(fenced)
        if not sqlite:
            self.attempts_of_mine = self.attempts_of_mine.with_for_update()
        self.retry_later = (
            update(jobs)
            .where(fenced)
            .values(
                status=JobStatus.QUEUED,
                run_at=later("retry_at"),
                lease_owner=None,
                lease_expires_at=None,
                last_error=bindparam("error_", type_=Text()),
                updated_at=now,
            )
        )
        self.give_up = (
            update(jobs)
            .where(fenced)
            .values(
                status=bindparam("status_", type_=String()),
                lease_expires_at=None,
                last_error=bindparam("error_", type_=Text()),
                finished_at=now,
                updated_at=now,
            )
        )
        self.release = (
            update(jobs)
            .where(fenced)
            .values(
                status=JobStatus.QUEUED,
                lease_owner=None,
                lease_expires_at=None,
                attempts=j.attempts - 1,
                updated_at=now,
            )
        )
        # Released for later (a part the job needs is away): the same, due again at retry_at.
        self.release_later = self.release.values(run_at=later("retry_at"))
        self.cancel = (
            update(jobs)
            .where(j.id == job_id, j.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            .values(
                status=JobStatus.CANCELLED, lease_expires_at=None, finished_at=now, updated_at=now
            )
        )
        # Added for the operator view (/admin, atelier.web.admin): run a finished job again
        # (attempts start over), and move a waiting job up or down the line.
        self.requeue = (
            update(jobs)
            .where(j.id == job_id, j.status.in_([JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED]))
            .values(
                status=JobStatus.QUEUED, attempts=0, run_at=now, lease_owner=None,
                lease_expires_at=None, finished_at=None, updated_at=now,
            )
        )
        self.set_priority = (
            update(jobs)
            .where(j.id == job_id, j.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            .values(priority=bindparam("priority_", type_=Integer()), updated_at=now)
        )
        self.expired = select(jobs).where(expired).order_by(j.id)
        self.requeue_expired = (
            update(jobs)
            .where(expired, j.attempts < j.max_attempts)
            .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None, updated_at=now)
            .returning(j.id)
        )
        self.bury_expired = (
            update(jobs)
            .where(expired, j.attempts >= j.max_attempts)
            .values(
                status=JobStatus.DEAD,
                last_error=func.coalesce(j.last_error + "\n", "") + LEASE_EXPIRED,
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
            )
            .returning(j.id)
        )
        self.purge = delete(jobs).where(
            j.status.in_(JobStatus.FINISHED), j.finished_at < later("before")
        )
        self.get = select(jobs).where(j.id == job_id)
        self.position_of = select(j.kind, j.status, j.priority, j.run_at, j.id).where(j.id == job_id)
        p = bindparam("priority_", type_=Integer())
        r = bindparam("run_at_", type_=UTCDateTime())
        self.ahead = (
            select(func.count())
            .select_from(jobs)
            .where(
                j.status == JobStatus.QUEUED,
                or_(
                    j.priority > p,
                    and_(j.priority == p, j.run_at < r),
                    and_(j.priority == p, j.run_at == r, j.id < job_id),
                ),
            )
        )
        self.counts = select(j.kind, j.status, func.count()).group_by(j.kind, j.status)
        self.oldest_due = select(func.min(j.run_at), now.label("now")).where(
            j.status == JobStatus.QUEUED, j.run_at <= now
        )
        self.count_expired = select(func.count()).select_from(jobs).where(expired)
        self.any_runnable = {
            filtered: select(j.id).where(runnable, of_kinds if filtered else true()).limit(1)
            for filtered in (False, True)
        }
        self.any_runnable_above = {
            filtered: select(j.id).where(runnable, above, of_kinds if filtered else true()).limit(1)
            for filtered in (False, True)
        }
        # What a waiting job's estimate is made of: the queued jobs that a claim takes before
        # it (any kind: one worker runs every kind), and the running ones.
        self.ahead_jobs = (
            select(j.id, j.kind, j.status, j.priority, j.progress, j.progress_detail, j.started_at)
            .where(
                or_(
                    j.status == JobStatus.RUNNING,
                    and_(
                        j.status == JobStatus.QUEUED,
                        or_(
                            j.priority > p,
                            and_(j.priority == p, j.run_at < r),
                            and_(j.priority == p, j.run_at == r, j.id < job_id),
                        ),
                    ),
                )
            )
            .order_by(*claim_order)
        )
        # How long jobs of a kind took lately: the started_at and finished_at of done jobs
        # (the latest claim's start: a pre-empted job's time before that is not counted).
        self.recent_done = (
            select(j.kind, j.started_at, j.finished_at)
            .where(j.status == JobStatus.DONE, j.kind == bindparam("kind_"), j.started_at.is_not(None))
            .order_by(j.finished_at.desc())
            .limit(bindparam("limit", type_=Integer()))
        )
        self.seen_workers = select(workers).where(workers.c.last_seen_at >= later("since"))
        self.seen_workers = self.seen_workers.order_by(workers.c.last_seen_at.desc())
        self.forget_worker = delete(workers).where(workers.c.id == worker)
        upsert = sqlite_insert if sqlite else pg_insert
        record = upsert(workers).values(
            id=worker,
            host=bindparam("host_", type_=String()),
            pid=bindparam("pid_", type_=Integer()),
            kinds=bindparam("kinds_", type_=json_or_null),
            started_at=now,
            last_seen_at=now,
            current_job_id=bindparam("current_job_", type_=Integer()),
        )
        self.record_worker = record.on_conflict_do_update(
            index_elements=[workers.c.id],
            set_={
                "host": record.excluded.host,
                "pid": record.excluded.pid,
                "kinds": record.excluded.kinds,
                "last_seen_at": record.excluded.last_seen_at,
                "current_job_id": record.excluded.current_job_id,
            },
        )

    def times(self, **seconds_from_now: float) -> dict[str, Any]:
        """The time parameters: ``now`` and each named instant, so many seconds from now."""
        if self.sqlite:
            now = datetime.now(UTC)
            return {
                "now": now,
                **{k: now + timedelta(seconds=v) for k, v in seconds_from_now.items()},
            }
        return {k: timedelta(seconds=v) for k, v in seconds_from_now.items()}

    @staticmethod
    def kinds(kinds: Sequence[str] | None) -> tuple[bool, dict[str, Any]]:
        """(whether to filter, the parameter) for an optional list of kinds."""
        return (True, {"kinds": list(kinds)}) if kinds else (False, {})


LEASE_EXPIRED = "lease expired on the last attempt (the worker died or hung)"
#: Lower than any priority: a claim with ``above=None`` takes every priority.
_NO_FLOOR = -(2**31)


def _greatest(sqlite: bool, *values: ColumnElement[Any]) -> ColumnElement[Any]:
    # SQLite's scalar max(a, b) is PostgreSQL's greatest(a, b).
    return func.max(*values) if sqlite else func.greatest(*values)


_SQL_BY_BACKEND: dict[bool, _SQL] = {}


def _sql_for(sqlite: bool) -> _SQL:
    if sqlite not in _SQL_BY_BACKEND:
        _SQL_BY_BACKEND[sqlite] = _SQL(sqlite)
    return _SQL_BY_BACKEND[sqlite]


def _is_sqlite(bind: Session | Connection | Engine) -> bool:
    if isinstance(bind, Session):
        bind = bind.get_bind()
    return bind.dialect.name == "sqlite"


# ------------------------------------------------------------------------------------------------
# enqueue: in the caller's transaction


def enqueue(
    session: Session | Connection,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    priority: int = 0,
    run_at: datetime | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    output_key: str | None = None,
) -> int:
    """Add a job in the caller's transaction (an artwork and its job commit together or not at
    all) and return its id. Higher ``priority`` runs first; ``run_at`` (aware) delays it;
    ``output_key`` names the blob the job writes (reconcile remakes a missing blob with it)."""
    return enqueue_many(
        session,
        kind,
        [payload or {}],
        priority=priority,
        run_at=run_at,
        max_attempts=max_attempts,
        output_keys=[output_key],
    )[0]


def enqueue_many(
    session: Session | Connection,
    kind: str,
    payloads: Iterable[dict[str, Any]],
    *,
    priority: int = 0,
    run_at: datetime | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    output_keys: Sequence[str | None] | None = None,
) -> list[int]:
    """Add several jobs of one kind in the caller's transaction; their ids, in order."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if run_at is not None and run_at.tzinfo is None:
        raise ValueError("run_at must be timezone-aware")
    payloads = list(payloads)
    if not payloads:
        return []
    keys = list(output_keys) if output_keys is not None else [None] * len(payloads)
    if len(keys) != len(payloads):
        raise ValueError("one output key per payload")
    sqlite = _is_sqlite(session)
    sql = _sql_for(sqlite)
    common = {
        "kind_": kind,
        "priority_": priority,
        "run_at_": run_at,
        "max_attempts_": max_attempts,
        **sql.times(),
    }
    rows = [
        {**common, "payload_": payload, "output_key_": key}
        for payload, key in zip(payloads, keys, strict=True)
    ]
    ids = [int(i) for i in session.execute(sql.enqueue, rows).scalars()]
    if sqlite:
        _wake_local_on_commit(session)
    else:
        # Delivered when (and only if) the caller's transaction commits.
        session.execute(select(func.pg_notify(NOTIFY_CHANNEL, kind)))
    return ids


# Workers inside the same process (the laptop setup: SQLite, workers in the server) wake at once;
# other processes find new jobs by polling.
_local_wakeup = threading.Condition()
_local_generation = 0


def _notify_local() -> None:
    global _local_generation
    with _local_wakeup:
        _local_generation += 1
        _local_wakeup.notify_all()


def _wake_local_on_commit(session: Session | Connection) -> None:
    if isinstance(session, Session):
        sa_event.listen(session, "after_commit", lambda _s: _notify_local(), once=True)


# ------------------------------------------------------------------------------------------------
# the queue


class JobQueue:
    """Claim and settle jobs on ``engine``. Thread-safe: share one per process.

    ``lease_seconds`` is how long a claim lasts without a heartbeat (ATELIER_LEASE_SECONDS);
    ``retry`` the backoff between attempts; ``poll_interval`` how often :meth:`wait_for_jobs`
    looks on SQLite, where there is no LISTEN/NOTIFY.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        lease_seconds: float = 60.0,
        retry: RetryPolicy | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.engine = engine
        self.lease_seconds = float(lease_seconds)
        self.retry = retry or RetryPolicy()
        self.poll_interval = poll_interval
        self.sqlite = engine.dialect.name == "sqlite"
        self._sql = _sql_for(self.sqlite)
        self._reader = engine.execution_options(sqlite_begin="DEFERRED")
        self._listener: Any = None  # psycopg.Connection LISTENing on PostgreSQL
        self._listener_lock = threading.Lock()

    # -- producing ---------------------------------------------------------------------------

    def enqueue(self, kind: str, payload: dict[str, Any] | None = None, **options: Any) -> int:
        """:func:`enqueue` in a transaction of its own."""
        with Session(self.engine) as session, session.begin():
            return enqueue(session, kind, payload, **options)

    # -- claiming ----------------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        *,
        kinds: Sequence[str] | None = None,
        limit: int = 1,
        lease_seconds: float | None = None,
        above: int | None = None,
    ) -> list[JobInfo]:
        """Claim up to ``limit`` runnable jobs (of ``kinds``, or any) for ``worker_id``, highest
        priority first, then oldest ``run_at``, then oldest id. Each comes back ``running``,
        leased to the worker for ``lease_seconds``, with one more attempt counted. ``above``:
        only jobs whose priority is higher than that (what may go before a running job)."""
        if limit < 1:
            return []
        sql = self._sql
        filtered, kind_params = sql.kinds(kinds)
        params = {
            "worker": worker_id,
            "limit": limit,
            "above": _NO_FLOOR if above is None else int(above),
            **kind_params,
            **sql.times(lease_until=lease_seconds or self.lease_seconds),
        }
        with self.engine.begin() as conn:
            self._lazy_commit(conn)
            conn.execute(sql.bury[filtered], params)
            rows = conn.execute(sql.claim[filtered], params).all()
        claimed = [_job(row) for row in rows]
        # RETURNING gives no order; hand them back in claim order.
        claimed.sort(key=lambda job: (-job.priority, job.run_at, job.id))
        return claimed

    # -- the worker's fenced writes ------------------------------------------------------------

    def heartbeat(self, job_id: int, worker_id: str, *, lease_seconds: float | None = None) -> bool:
        """Extend the lease; False if the job is no longer this worker's (stop working on it)."""
        return self._fenced(
            self._sql.heartbeat,
            job_id,
            worker_id,
            lazy=True,
            **self._sql.times(lease_until=lease_seconds or self.lease_seconds),
        )

    def set_progress(
        self,
        job_id: int,
        worker_id: str,
        progress: float,
        *,
        detail: dict[str, Any] | None = None,
        preview_key: str | None = None,
    ) -> bool:
        """Record progress (0..1), a detail dict (stage, step, loss ...) and the key of the latest
        intermediate preview (both kept as they were when None). False if the job is no longer
        this worker's."""
        return self._fenced(
            self._sql.progress,
            job_id,
            worker_id,
            progress_=min(1.0, max(0.0, float(progress))),
            detail_=detail,
            preview_key_=preview_key,
            lazy=True,
            **self._sql.times(),
        )

    def complete(
        self, job_id: int, worker_id: str, *, result: dict[str, Any] | None = None
    ) -> bool:
        """Mark the job done. False (and nothing changes) if the lease was lost meanwhile."""
        ok = self._fenced(
            self._sql.complete, job_id, worker_id, result_=result, **self._sql.times()
        )
        if not ok:
            log.warning("job %s: completion by %s refused (lease lost)", job_id, worker_id)
        return ok

    def fail(
        self,
        job_id: int,
        worker_id: str,
        error: str,
        *,
        retry: bool = True,
        retry_in: float | None = None,
    ) -> str | None:
        """Record a failed attempt and return the job's new status: ``queued`` (it will be retried
        after a backoff, or ``retry_in`` seconds), ``dead`` (no attempts left) or ``failed``
        (``retry=False``: retrying cannot help, e.g. the photo is unreadable). None if the lease
        was lost meanwhile (the failure is not recorded: the job is someone else's now)."""
        sql = self._sql
        params: dict[str, Any] = {
            "job_id": job_id,
            "worker": worker_id,
            "error_": error[-MAX_ERROR_CHARS:],
        }
        with self.engine.begin() as conn:
            row = conn.execute(sql.attempts_of_mine, params).first()
            if row is None:
                log.warning("job %s: failure report by %s refused (lease lost)", job_id, worker_id)
                return None
            if retry and row.attempts < row.max_attempts:
                delay = retry_in if retry_in is not None else self.retry.delay(row.attempts)
                conn.execute(sql.retry_later, params | sql.times(retry_at=delay))
                return JobStatus.QUEUED
            status = JobStatus.DEAD if retry else JobStatus.FAILED
            conn.execute(sql.give_up, params | {"status_": status} | sql.times())
            return status

    def release(self, job_id: int, worker_id: str, *, retry_in: float = 0.0) -> bool:
        """Give the job back untouched, the attempt not counted: queued again at once (the
        worker is shutting down) or after ``retry_in`` seconds (a part it needs is away, see
        ``atelier.service.worker.is_outage``). False if it was not this worker's any more."""
        if retry_in > 0:
            return self._fenced(self._sql.release_later, job_id, worker_id, **self._sql.times(retry_at=retry_in))
        # At once, keeping its run_at: it keeps its place in the line.
        return self._fenced(self._sql.release, job_id, worker_id, **self._sql.times())

    def _fenced(
        self, statement: Any, job_id: int, worker_id: str, *, lazy: bool = False, **params: Any
    ) -> bool:
        with self.engine.begin() as conn:
            if lazy:
                self._lazy_commit(conn)
            result = conn.execute(statement, {"job_id": job_id, "worker": worker_id, **params})
            return result.rowcount == 1

    def _lazy_commit(self, conn: Connection) -> None:
        # Lease bookkeeping (claim, heartbeat, progress) does not wait for the WAL flush on
        # PostgreSQL: that flush is most of a claim's time (about 5 ms of the 5.5 here). If the
        # server crashes, the last such writes may be lost (never half-applied): a claim or a
        # heartbeat that vanishes only means the job runs again, which at-least-once allows.
        # Enqueue, complete and fail stay fully durable.
        if not self.sqlite:
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

    # -- operator actions --------------------------------------------------------------------

    def cancel(self, job_id: int) -> bool:
        """Cancel a queued or running job; a running one's worker finds out at its next
        heartbeat (the fence refuses it). False if the job had already finished."""
        with self.engine.begin() as conn:
            result = conn.execute(self._sql.cancel, {"job_id": job_id, **self._sql.times()})
            return result.rowcount == 1

    def requeue(self, job_id: int) -> bool:
        """Queue a failed, dead or cancelled job again, now, with its attempts starting over.
        False if the job is not in one of those states."""
        with self.engine.begin() as conn:
            result = conn.execute(self._sql.requeue, {"job_id": job_id, **self._sql.times()})
        if result.rowcount == 1 and self.sqlite:
            _notify_local()
        return result.rowcount == 1

    def set_priority(self, job_id: int, priority: int) -> bool:
        """Change a waiting (or running) job's priority; higher runs first. False if finished."""
        with self.engine.begin() as conn:
            result = conn.execute(
                self._sql.set_priority, {"job_id": job_id, "priority_": int(priority), **self._sql.times()}
            )
            return result.rowcount == 1

    def expired(self) -> list[JobInfo]:
        """Running jobs whose lease has run out: their worker died or hangs."""
        with self._reader.connect() as conn:
            return [_job(row) for row in conn.execute(self._sql.expired, self._sql.times())]

    def requeue_expired(self) -> tuple[list[int], list[int]]:
        """Settle the jobs whose lease ran out now rather than at the next claim: back to the
        queue if they have attempts left, ``dead`` if not. Returns (requeued ids, dead ids)."""
        times = self._sql.times()
        with self.engine.begin() as conn:
            dead = conn.execute(self._sql.bury_expired, times).scalars().all()
            requeued = conn.execute(self._sql.requeue_expired, times).scalars().all()
        return sorted(requeued), sorted(dead)

    def purge_finished(self, older_than: timedelta) -> int:
        """Delete finished jobs (done, failed, dead, cancelled) older than ``older_than``."""
        with self.engine.begin() as conn:
            result = conn.execute(
                self._sql.purge, self._sql.times(before=-older_than.total_seconds())
            )
            return int(result.rowcount)

    # -- reading -----------------------------------------------------------------------------

    def get(self, job_id: int) -> JobInfo | None:
        """The job as it stands, or None."""
        with self._reader.connect() as conn:
            row = conn.execute(self._sql.get, {"job_id": job_id}).first()
        return _job(row) if row is not None else None

    def list_jobs(
        self,
        *,
        statuses: Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[JobInfo]:
        """Jobs newest first, optionally of some statuses and kinds; ``before_id`` pages on
        (the jobs older than that id). For the operator: built per call, not in the hot path."""
        j = jobs.c
        query = select(jobs).order_by(j.id.desc()).limit(max(1, int(limit)))
        if statuses:
            query = query.where(j.status.in_(list(statuses)))
        if kinds:
            query = query.where(j.kind.in_(list(kinds)))
        if before_id is not None:
            query = query.where(j.id < int(before_id))
        with self._reader.connect() as conn:
            return [_job(row) for row in conn.execute(query)]

    def find(self, kind: str, output_key: str) -> JobInfo | None:
        """The job of ``kind`` that writes ``output_key`` (the first, should there be two)."""
        j = jobs.c
        query = select(jobs).where(j.kind == kind, j.output_key == output_key).order_by(j.id).limit(1)
        with self._reader.connect() as conn:
            row = conn.execute(query).first()
        return _job(row) if row is not None else None

    def position(self, job_id: int) -> int | None:
        """1 if the job is next in line among queued jobs, 2 if one is ahead, ...; None if it
        is not queued. Claim order: priority, then run_at, then id; every kind counts (jobs of
        all kinds share the workers, and a job kind's priority says which goes first)."""
        with self._reader.connect() as conn:
            job = conn.execute(self._sql.position_of, {"job_id": job_id}).first()
            if job is None or job.status != JobStatus.QUEUED:
                return None
            ahead = conn.execute(
                self._sql.ahead,
                {"job_id": job.id, "priority_": job.priority, "run_at_": job.run_at},
            ).scalar_one()
        return int(ahead) + 1

    def stats(self) -> QueueStats:
        """Counts per kind and status, the age of the oldest due queued job, expired leases."""
        times = self._sql.times()
        with self._reader.connect() as conn:
            counts: dict[str, dict[str, int]] = {}
            for kind, status, n in conn.execute(self._sql.counts):
                counts.setdefault(kind, {})[status] = int(n)
            oldest, now = conn.execute(self._sql.oldest_due, times).one()
            expired = conn.execute(self._sql.count_expired, times).scalar_one()
        age = None
        if oldest is not None:
            age = max(0.0, (_as_datetime(now) - _as_datetime(oldest)).total_seconds())
        return QueueStats(counts=counts, oldest_queued_age=age, expired_leases=int(expired))

    def waiting_above(self, priority: int, *, kinds: Sequence[str] | None = None) -> bool:
        """Whether a job of a higher priority than ``priority`` (of ``kinds``, or any) could be
        claimed now: the question a running long job's worker asks between iterations."""
        filtered, kind_params = self._sql.kinds(kinds)
        params = kind_params | {"above": int(priority)} | self._sql.times()
        with self._reader.connect() as conn:
            found = conn.execute(self._sql.any_runnable_above[filtered], params).first()
        return found is not None

    def kind_and_priority(self, job_id: int) -> tuple[str, int] | None:
        """The job's kind and priority as they stand now (an operator, or a payment, may change
        them while it runs), or None if there is no such job."""
        with self._reader.connect() as conn:
            row = conn.execute(self._sql.position_of, {"job_id": job_id}).first()
        return (row.kind, int(row.priority)) if row is not None else None

    def ahead_of(self, job_id: int) -> list[JobInLine]:
        """The jobs that go before a queued job: every running job, then the queued ones a
        claim takes first (higher priority, or the same and older), in claim order. Empty if
        the job is not queued."""
        with self._reader.connect() as conn:
            job = conn.execute(self._sql.position_of, {"job_id": job_id}).first()
            if job is None or job.status != JobStatus.QUEUED:
                return []
            rows = conn.execute(
                self._sql.ahead_jobs,
                {"job_id": job.id, "priority_": job.priority, "run_at_": job.run_at},
            ).all()
        line = [JobInLine(**row._mapping) for row in rows]
        return sorted(line, key=lambda j: j.status != JobStatus.RUNNING)  # stable: claim order kept

    def recent_seconds(self, kind: str, *, limit: int = 20) -> list[float]:
        """How many seconds the last ``limit`` done jobs of ``kind`` ran (their last claim to
        done), newest first: what an estimate for the next one starts from."""
        with self._reader.connect() as conn:
            rows = conn.execute(self._sql.recent_done, {"kind_": kind, "limit": int(limit)}).all()
        return [
            max(0.0, (_as_datetime(done) - _as_datetime(start)).total_seconds())
            for _, start, done in rows
            if start is not None and done is not None
        ]

    def has_runnable(self, kinds: Sequence[str] | None = None) -> bool:
        """Whether a claim now would find something."""
        filtered, kind_params = self._sql.kinds(kinds)
        with self._reader.connect() as conn:
            found = conn.execute(
                self._sql.any_runnable[filtered], kind_params | self._sql.times()
            ).first()
        return found is not None

    # -- waiting for work --------------------------------------------------------------------

    def wait_for_jobs(self, timeout: float, *, kinds: Sequence[str] | None = None) -> bool:
        """Block until a job may be waiting, at most ``timeout`` seconds; True if woken.

        PostgreSQL: LISTEN on a connection of our own; an enqueue NOTIFYs on commit. The first
        call only sets up the LISTEN and returns True at once, so that the caller claims again
        before it sleeps and cannot miss a job enqueued just before. SQLite: in-process enqueues
        wake us at once; otherwise the table is polled every ``poll_interval``.
        """
        if self.sqlite:
            return self._poll(timeout, kinds)
        with self._listener_lock:
            try:
                if self._listener is None:
                    self._listener = self._listen()
                    return True
                for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                    return True
                return False
            except Exception as exc:  # the server went away: reconnect next time, poll for now
                log.warning("LISTEN connection lost (%s); polling", exc)
                self._close_listener()
                time.sleep(min(timeout, self.poll_interval))
                return True

    def _listen(self) -> Any:
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = psycopg.connect(url, autocommit=True)
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return conn

    def _poll(self, timeout: float, kinds: Sequence[str] | None) -> bool:
        deadline = time.monotonic() + timeout
        with _local_wakeup:
            seen = _local_generation
        while True:
            if self.has_runnable(kinds):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with _local_wakeup:
                if _local_generation == seen:
                    _local_wakeup.wait(min(remaining, self.poll_interval))
                if _local_generation != seen:
                    return True

    def _close_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                pass
            self._listener = None

    def close(self) -> None:
        """Close the LISTEN connection, if any (the engine is the caller's)."""
        with self._listener_lock:
            self._close_listener()

    # -- workers, for the admin view ------------------------------------------------------------

    def record_worker(
        self,
        worker_id: str,
        *,
        host: str,
        pid: int,
        kinds: Sequence[str] | None = None,
        current_job_id: int | None = None,
    ) -> None:
        """Say that ``worker_id`` is alive (and what it is doing): insert or update its row."""
        params = {
            "worker": worker_id,
            "host_": host,
            "pid_": pid,
            "kinds_": list(kinds) if kinds else None,
            "current_job_": current_job_id,
            **self._sql.times(),
        }
        with self.engine.begin() as conn:
            conn.execute(self._sql.record_worker, params)

    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker's row (it stopped cleanly)."""
        with self.engine.begin() as conn:
            conn.execute(self._sql.forget_worker, {"worker": worker_id})

    def workers(self, *, seen_within: timedelta | None = None) -> list[WorkerInfo]:
        """Workers that reported themselves (within ``seen_within`` if given), newest first."""
        window = seen_within.total_seconds() if seen_within is not None else 100 * 365 * 86400
        with self._reader.connect() as conn:
            rows = conn.execute(self._sql.seen_workers, self._sql.times(since=-window))
            return [WorkerInfo(**row._mapping) for row in rows]


def _job(row: Any) -> JobInfo:
    values = dict(row._mapping)
    values["progress"] = float(values["progress"])  # SQLite hands back 0 for 0.0
    return JobInfo(**values)


def _as_datetime(value: Any) -> datetime:
    """Aware datetime from a selected timestamp (SQLite hands an echoed parameter back as text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


# ------------------------------------------------------------------------------------------------
# the heartbeat thread


class Heartbeat:
    """Keeps a claimed job's lease alive from a thread while the work runs.

    A thread, not a coroutine: rendering holds the CPU (and the GIL between torch kernels) for
    seconds at a time, so an event-loop task would miss its beats and lose the lease. Beats every
    third of the lease, so two can fail (a database hiccup) before the lease runs out. When a beat
    finds the lease lost (reclaimed, cancelled), ``lost`` is set, ``on_lost`` is called once and
    the thread stops; the work should stop too (:meth:`check` raises :class:`LeaseLostError`).

        with Heartbeat(queue, job.id, worker_id) as beat:
            render(..., progress=lambda p: (beat.check(), queue.set_progress(...)))
    """

    def __init__(
        self,
        queue: JobQueue,
        job_id: int,
        worker_id: str,
        *,
        lease_seconds: float | None = None,
        interval: float | None = None,
        on_lost: Callable[[], None] | None = None,
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        self.queue = queue
        self.job_id = job_id
        self.worker_id = worker_id
        self.lease_seconds = float(lease_seconds or queue.lease_seconds)
        self.interval = interval if interval is not None else self.lease_seconds / 3
        self.on_lost = on_lost
        # Called after every beat that kept the lease: the worker says it is alive (the admin
        # view calls a worker stale when it has not been heard of for a while, and a long
        # painting would otherwise be silent from its first beat to its last).
        self.on_beat = on_beat
        self.lost = threading.Event()
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-job-{job_id}", daemon=True
        )

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and wait for the thread (at most one database round trip)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if the lease was lost."""
        if self.lost.is_set():
            from atelier.store.errors import LeaseLostError

            raise LeaseLostError(f"job {self.job_id} is no longer held by {self.worker_id}")

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                ok = self.queue.heartbeat(
                    self.job_id, self.worker_id, lease_seconds=self.lease_seconds
                )
            except Exception:  # a hiccup: the next beat may get through before the lease ends
                log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)
                continue
            if self._stop.is_set():
                return
            if not ok:
                log.warning("job %s: lease lost by %s", self.job_id, self.worker_id)
                self.lost.set()
                if self.on_lost is not None:
                    try:
                        self.on_lost()
                    except Exception:
                        log.exception("job %s: on_lost callback failed", self.job_id)
                return
            self.beats += 1
            if self.on_beat is not None:
                try:
                    self.on_beat()
                except Exception:
                    log.warning("job %s: on_beat callback failed", self.job_id, exc_info=True)


__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "Heartbeat",
    "JobInLine",
    "JobInfo",
    "JobQueue",
    "QueueStats",
    "RetryPolicy",
    "WorkerInfo",
    "enqueue",
    "enqueue_many",
]
