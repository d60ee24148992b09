"""The worker loop: claim a job -> run its handler -> store -> settle (done, retry, failed).

A handler is a function registered for a job kind (:func:`job_handler`); it receives a
:class:`JobContext` to report progress and intermediate previews, and returns the job's result
(a small dict) or raises. The commission painter registers ``artwork.preview`` and ``artwork.hd`` (in
:mod:`atelier.service.commission.job`), the video renderer ``video.stylize`` (in
:mod:`atelier.service.videos`); other services add theirs the same way.

Leases and stopping:

* While a handler runs, a :class:`~atelier.store.queue.Heartbeat` thread renews the lease (a
  thread, because rendering holds the CPU). If the lease is lost (the job was cancelled, or the
  worker stalled past its lease and another took it), the next progress report raises
  :class:`~atelier.store.errors.LeaseLostError` and the work is dropped: nothing more is written.
* Stopping (SIGTERM, or the server shutting down) sets ``stop``. The worker claims nothing more;
  a running handler is interrupted at its next progress report and the job is *released*: queued
  again at once, the attempt not counted, for another worker (or this one after a restart). A
  handler that reports no progress runs to its end and completes. Either way nothing stays
  claimed by a process that exited cleanly; a process that is killed leaves a lease that runs
  out after ATELIER_LEASE_SECONDS, and the job is claimed again.
* Outages: a job that finds the blob store unreachable or full (:func:`is_outage`) is neither
  failed nor retried: it is released, its attempt not counted, and the worker backs off as it
  does when the queue is away, checking the store before it claims anything again.
* Failures: :class:`PermanentJobError` (and the user-facing refusals of the art layer: a photo
  that cannot be read will not become readable) fail the job for good; anything else is retried
  with backoff up to the job's ``max_attempts``, then the job is ``dead``. Handlers are told
  whether an attempt is the last (:attr:`JobContext.last_attempt`) so they can tell the user.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from atelier.art.errors import ArtError, ModelError
from atelier.service.errors import PermanentJobError, ServiceError
from atelier.art.blocks.images import encode_image
from atelier.art.progress import Eta, Progress, ProgressMeter
from atelier.runtime import release_memory
from atelier.service import lanes
from atelier.service.context import Services
from atelier.service.decoding import DecodeBusyError
from atelier.store.errors import LeaseLostError, StorageUnavailableError
from atelier.store.queue import Heartbeat, JobInfo, RetryPolicy

log = logging.getLogger(__name__)

#: Modules whose import registers job handlers. Missing optional ones are skipped.
HANDLER_MODULES: tuple[str, ...] = (
    "atelier.service.commission.job",
    "atelier.service.videos",
    "atelier.service.batches",
)

#: Seconds between two writes of an intermediate preview (each one is a blob upload).
PREVIEW_INTERVAL = 2.0
#: Seconds between two progress writes without a preview (each one is a database write).
PROGRESS_INTERVAL = 0.5
#: Seconds between two looks for waiting work of a higher priority, from a running job that
#: may step aside for it (a read of the queue; a painting reports every iteration).
YIELD_CHECK_INTERVAL = 1.0


class JobInterrupted(Exception):
    """The worker is stopping: the job is released for another worker."""


class Preempted(Exception):
    """A job of a higher priority waits and this one's lane steps aside by release
    (:mod:`atelier.service.lanes`): the job goes back to the queue, its attempt not counted,
    its place in the line and its progress kept, and the worker claims what waits. A handler
    that keeps a checkpoint saves it before raising (or catches this, saves, and re-raises)."""


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says that something the job needs is away -- the blob store unreachable
    or full, or no room in the process's decoding budget -- rather than anything about the job itself. Such a job is not failed: it is handed
    back with its attempt not counted, and the worker waits the outage out the way it waits for
    a queue it cannot reach (:func:`outage_backoff`), checking the store before it claims again."""
    return isinstance(exc, (StorageUnavailableError, DecodeBusyError))


class JobDeferred(Exception):
    """The job cannot start yet for a reason that time fixes (this machine has not synced the
    style it needs): it goes back to the queue to run in ``delay_seconds``, the attempt not
    counted, so that waiting never uses up its attempts."""

    def __init__(self, reason: str, *, delay_seconds: float) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying cannot help: a :class:`PermanentJobError`, or a refusal of the art layer
    about the input (a photo that cannot be read will not become readable). Missing weights are
    not permanent: an operator can install them."""
    if isinstance(exc, (PermanentJobError, ServiceError)):
        return True
    return isinstance(exc, ArtError) and not isinstance(exc, ModelError)


Handler = Callable[["JobContext"], dict[str, Any] | None]
HANDLERS: dict[str, Handler] = {}


def job_handler(kind: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of jobs of ``kind``."""

    def register(function: Handler) -> Handler:
        HANDLERS[kind] = function
        return function

    return register


def load_handlers() -> dict[str, Handler]:
    """Import the modules that register handlers; the handlers by kind."""
    for name in HANDLER_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return dict(HANDLERS)


@dataclass
class JobContext:
    """What a handler gets: the job, the services, and ways to report progress."""

    services: Services
    job: JobInfo
    worker_id: str
    heartbeat: Heartbeat
    stop: threading.Event
    #: The worker's way of running waiting work of a higher priority in between (a pause);
    #: None for a job that is itself such an interlude (they do not nest).
    interlude: Callable[[JobContext], bool] | None = None
    #: The kinds the worker may claim (what "waiting work" means for should_yield).
    kinds: Sequence[str] | None = None
    _last_write: float = 0.0
    _last_preview: float = 0.0
    _last_yield_check: float = 0.0
    _previews: int = field(default=0)
    _last_detail: dict[str, Any] = field(default_factory=dict)
    _eta: Eta = field(default_factory=Eta)

    def __post_init__(self) -> None:
        detail = self.job.progress_detail or {}
        # A job claimed again keeps the count of its stored pictures and pre-emptions.
        self._previews = int(detail.get("previews") or 0) if self.job.preview_key else 0
        self._preemptions = int(detail.get("preemptions") or 0)
        self._eta = Eta(prior=self._prior_seconds())

    def _prior_seconds(self) -> float | None:
        """How long jobs of this kind took lately (the median of the last few), if any ran."""
        try:
            recent = sorted(self.services.queue.recent_seconds(self.job.kind, limit=9))
        except Exception:  # noqa: BLE001 - an estimate is not worth failing a job for
            return None
        return recent[len(recent) // 2] if recent else None

    @property
    def lane(self) -> lanes.Lane:
        return lanes.lane_of(self.job.kind)

    @property
    def preemptions(self) -> int:
        """How often this job has stepped aside (released for waiting work) so far."""
        return self._preemptions

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def last_attempt(self) -> bool:
        """Whether a failure now would be final (no attempts left)."""
        return self.job.attempts >= self.job.max_attempts

    def is_final_failure(self, exc: BaseException) -> bool:
        """Whether ``exc`` escaping the handler now ends the job for good (so the handler can
        tell the user): a permanent error, or any error on the last attempt -- not a stop."""
        if isinstance(exc, (JobInterrupted, JobDeferred, LeaseLostError, Preempted)) or is_outage(exc):
            return False
        return is_permanent(exc) or self.last_attempt

    def check(self) -> None:
        """Raise if the work should stop: the lease is lost, or the worker is stopping."""
        self.heartbeat.check()
        if self.stop.is_set():
            raise JobInterrupted(f"job {self.job.id}: the worker is stopping")

    def should_yield(self) -> bool:
        """Whether this job should step aside now: its lane is pre-emptible and a job of a
        higher priority waits that this worker could run. A read of the queue per call."""
        if self.lane.preempt is None or self.interlude is None:
            return False
        return self.services.queue.waiting_above(self.job.priority, kinds=self.kinds)

    def yield_point(self, *, force: bool = False) -> None:
        """Step aside if a job of a higher priority waits (looked for at most every
        :data:`YIELD_CHECK_INTERVAL` seconds unless ``force``): a ``pause`` lane runs it here
        and returns when it is done; a ``release`` lane raises :class:`Preempted`."""
        if self.lane.preempt is None or self.interlude is None:
            return
        now = time.monotonic()
        if not force and now - self._last_yield_check < YIELD_CHECK_INTERVAL:
            return
        self._last_yield_check = now
        self._refresh_lane()
        if not self.should_yield():
            return
        if self.lane.preempt == "release":
            raise Preempted(f"job {self.job.id} ({self.job.kind}) steps aside for a job of a higher priority")
        began = time.monotonic()
        self._write_paused(True)
        try:
            while self.interlude(self):  # until nothing of a higher priority waits
                self.check()
        finally:
            self._eta.skip(time.monotonic() - began)
            self._write_paused(False)
        self.check()

    def _refresh_lane(self) -> None:
        # A job promoted while it runs (a speculative HD whose buyer just paid becomes the paid
        # HD: another kind and priority) steps aside the way its new lane says from now on.
        try:
            now = self.services.queue.kind_and_priority(self.job.id)
        except Exception:  # noqa: BLE001 - a hiccup: keep the lane it had
            return
        if now is not None and now != (self.job.kind, self.job.priority):
            log.info("job %s is now %s, priority %d (was %s, %d)", self.job.id, now[0], now[1], self.job.kind, self.job.priority)
            self.job = replace(self.job, kind=now[0], priority=now[1])

    def _write_paused(self, paused: bool) -> None:
        # The status page says why the bar stands still; then the last detail comes back.
        info = dict(self._last_detail)
        if paused:
            info = info | {"paused": True, "eta_seconds": None}
        else:
            info.pop("paused", None)
        self.services.queue.set_progress(self.job.id, self.worker_id, self.job.progress, detail=info or None)
        self._last_write = time.monotonic()

    def progress(
        self,
        fraction: float,
        *,
        stage: str | None = None,
        detail: dict[str, Any] | None = None,
        preview: Image.Image | None = None,
        force: bool = False,
    ) -> None:
        """Record progress (0..1) and, at most every few seconds, an intermediate preview.

        Writes are throttled (a painting reports every iteration); ``force`` writes now.
        Raises :class:`LeaseLostError` or :class:`JobInterrupted` when the work should stop,
        :class:`Preempted` when it should step aside (a ``release`` lane), and runs waiting work
        of a higher priority in between for a ``pause`` lane (:meth:`yield_point`). The stored
        fraction never goes down; the detail gains ``eta_seconds`` (from how fast the fraction
        has grown in this run, blended with how long the last jobs of the kind took).
        """
        self.check()
        self.yield_point()
        now = time.monotonic()
        fraction = min(1.0, max(0.0, float(fraction)))
        preview_key = None
        if preview is not None and (force or now - self._last_preview >= PREVIEW_INTERVAL):
            preview_key = self.preview_key()
            self.services.blobs.put(preview_key, encode_image(preview, format="JPEG", quality=80), content_type="image/jpeg")
            self._last_preview = now
            self._previews += 1
        eta = self._eta.update(fraction)
        if not force and preview_key is None and now - self._last_write < PROGRESS_INTERVAL:
            return
        info = {"stage": stage} if stage else {}
        if detail:
            info.update(detail)
        # Every write replaces the job's detail: keep the counts in each, or a later plain
        # progress write would make the status page forget them.
        if self._previews:
            info["previews"] = self._previews
        if self._preemptions:
            info["preemptions"] = self._preemptions
        info["eta_seconds"] = None if eta is None else round(eta, 1)
        ok = self.services.queue.set_progress(
            self.job.id, self.worker_id, fraction, detail=info, preview_key=preview_key
        )
        self._last_write = now
        self._last_detail = info
        if not ok:
            raise LeaseLostError(f"job {self.job.id} is no longer held by {self.worker_id}")
        self.job = replace(self.job, progress=max(self.job.progress, fraction))

    def preview_key(self) -> str:
        """Where this job's intermediate previews go: one key per job, overwritten."""
        return f"progress/job-{self.job.id}.jpg"

    def progress_callback(
        self, *, start: float = 0.0, end: float = 1.0, tail: float = 0.0
    ) -> Callable[[Progress], None]:
        """An engine progress callback mapped onto [start, end] of the job's progress.

        The engine's reports become one fraction that never goes down
        (:class:`~atelier.art.progress.ProgressMeter`): a Gatys painting's passes weighted by
        their pixels x iterations, the last ``tail`` of the range left to what follows the
        passes (finishing, upscaling). The detail carries ``pass`` and ``passes`` when the
        engine paints in passes.
        """
        meter = ProgressMeter(tail=tail)

        def report(p: Progress) -> None:
            detail: dict[str, Any] = {"step": p.step, "total": p.total}
            if p.loss is not None:
                detail["loss"] = round(float(p.loss), 4)
            extra = p.extra or {}
            if "pass" in extra and "passes" in extra:
                detail["pass"], detail["passes"] = int(extra["pass"]), int(extra["passes"])
            elif meter.passes:
                detail["pass"] = detail["passes"] = meter.passes  # after the passes: all done
            if meter.work:
                detail["work"] = meter.work
            self.progress(start + (end - start) * meter(p), stage=p.stage, detail=detail, preview=p.preview)

        return report


#: Longest wait between two tries of a worker that cannot reach the database.
OUTAGE_BACKOFF_MAX = 15.0
#: The queue's backoff formula with the outage's numbers: 0.5 s doubling up to
#: :data:`OUTAGE_BACKOFF_MAX`, no jitter. Short at first (a restart takes seconds), bounded so
#: that the worker is back within seconds of the database; every worker of a fleet retrying at
#: full speed would hammer a database that is coming back up.
OUTAGE_RETRY = RetryPolicy(base_seconds=0.5, factor=2.0, max_seconds=OUTAGE_BACKOFF_MAX, jitter=0.0)


def outage_backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` failed tries in a row to reach the queue."""
    return OUTAGE_RETRY.delay(failures)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """Claims and runs jobs of ``kinds`` (default: every kind with a handler)."""

    def __init__(
        self,
        services: Services,
        *,
        kinds: Sequence[str] | None = None,
        worker_id: str | None = None,
        handlers: dict[str, Handler] | None = None,
        idle_wait: float = 2.0,
        presence_interval: float = 15.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.services = services
        #: The backoff between attempts of a failed job; None: the queue's own.
        self.retry = retry
        self.handlers = handlers if handlers is not None else load_handlers()
        self.kinds = list(kinds) if kinds else sorted(self.handlers)
        unknown = [k for k in self.kinds if k not in self.handlers]
        if unknown:
            raise ValueError(f"no handler for job kinds: {', '.join(unknown)}")
        self.worker_id = worker_id or default_worker_id()
        self.idle_wait = idle_wait
        self.presence_interval = presence_interval
        self.current_job: int | None = None
        self._last_presence = 0.0
        #: What a job last found away (see is_outage); checked again before the next claim.
        self.away: BaseException | None = None

    # -- presence, for the admin view -----------------------------------------------------------

    def report_presence(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_presence < self.presence_interval:
            return
        try:
            self.services.queue.record_worker(
                self.worker_id, host=socket.gethostname(), pid=os.getpid(), kinds=self.kinds, current_job_id=self.current_job
            )
            self._last_presence = now
        except Exception:  # noqa: BLE001 - presence is informational
            log.warning("worker %s: could not record presence", self.worker_id, exc_info=True)

    # -- running -----------------------------------------------------------------------------

    def run_once(self, stop: threading.Event | None = None) -> str | None:
        """Claim one job and run it to its end; its outcome (see :meth:`run_job`), or None if
        there was nothing to claim."""
        stop = stop or threading.Event()
        claimed = self.services.queue.claim(self.worker_id, kinds=self.kinds, limit=1)
        if not claimed:
            return None
        return self.run_job(claimed[0], stop)

    def run_job(self, job: JobInfo, stop: threading.Event, *, nested: bool = False) -> str:
        """Run a claimed job and settle it; the outcome (done, released, preempted, waiting,
        deferred, retry, failed, dead, lost). ``nested``: the job runs in a pause of another
        one (:meth:`interlude`) and may not pause for a third."""
        queue = self.services.queue
        handler = self.handlers[job.kind]
        outer_job = self.current_job
        self.current_job = job.id
        self.report_presence(force=True)
        started = time.perf_counter()
        outcome = "done"
        log.info("job %s (%s) claimed by %s, attempt %d/%d", job.id, job.kind, self.worker_id, job.attempts, job.max_attempts)
        heartbeat = Heartbeat(queue, job.id, self.worker_id, on_beat=self.report_presence)
        try:
            with heartbeat:
                context = JobContext(
                    self.services, job, self.worker_id, heartbeat, stop,
                    interlude=None if nested else self.interlude, kinds=self.kinds,
                )
                try:
                    result = handler(context)
                except JobInterrupted:
                    outcome = "released" if queue.release(job.id, self.worker_id) else "lost"
                    log.info("job %s released by %s (stopping)", job.id, self.worker_id)
                    return outcome
                except Preempted as exc:
                    # Its place in the line (run_at) and its progress are kept; the count tells
                    # the operator (and the handler, next time) how often it stepped aside.
                    detail = dict(context._last_detail or job.progress_detail or {})
                    detail |= {"stage": "preempted", "preemptions": context.preemptions + 1, "eta_seconds": None}
                    queue.set_progress(job.id, self.worker_id, context.job.progress, detail=detail)
                    outcome = "preempted" if queue.release(job.id, self.worker_id) else "lost"
                    log.info("job %s released by %s: %s", job.id, self.worker_id, exc)
                    return outcome
                except JobDeferred as exc:
                    # The reason stays on the job's progress for the operator and the status pages.
                    queue.set_progress(job.id, self.worker_id, 0.0, detail={"stage": "waiting", "waiting_for": str(exc)})
                    deferred = queue.release(job.id, self.worker_id, retry_in=exc.delay_seconds)
                    outcome = "deferred" if deferred else "lost"
                    log.info("job %s deferred by %s for %.0f s: %s", job.id, self.worker_id, exc.delay_seconds, exc)
                    return outcome
                except LeaseLostError as exc:
                    outcome = "lost"
                    log.warning("job %s dropped: %s", job.id, exc)
                    return outcome
                except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
                    if is_outage(exc):
                        outcome = self._wait_out(job, exc)
                        return outcome
                    outcome = self._fail(job, exc)
                    return outcome
                if not queue.complete(job.id, self.worker_id, result=result or None):
                    outcome = "lost"
                    return outcome
                log.info("job %s (%s) done in %.1f s", job.id, job.kind, time.perf_counter() - started)
                return outcome
        finally:
            self.current_job = outer_job
            self.services.metrics.job_seconds.labels(job.kind, outcome).observe(time.perf_counter() - started)
            self.report_presence(force=True)
            if not nested:
                # Whatever the job was, its freed memory goes back to the system (the allocator
                # tuning keeps it otherwise: a long-lived worker must not sit at its largest
                # job's peak, issue 14). Not after a job run in a pause: the paused painting
                # needs its memory again at once.
                release_memory()

    def interlude(self, paused: JobContext) -> bool:
        """Run one waiting job of a higher priority than ``paused``'s, here and now, while the
        paused job waits in memory (its heartbeat keeps its lease). False if none was waiting.
        The stop event is the paused job's: a worker that stops releases both."""
        claimed = self.services.queue.claim(self.worker_id, kinds=self.kinds, limit=1, above=paused.job.priority)
        if not claimed:
            return False
        job = claimed[0]
        log.info("job %s (%s) pauses for job %s (%s)", paused.job.id, paused.job.kind, job.id, job.kind)
        outcome = self.run_job(job, paused.stop, nested=True)
        log.info("job %s (%s) carries on after job %s: %s", paused.job.id, paused.job.kind, job.id, outcome)
        if outcome == "waiting" and self.away is not None:
            raise self.away  # the store is away for the paused job too: hand it back as well
        return True

    def _wait_out(self, job: JobInfo, exc: Exception) -> str:
        """A part the job needs is away: hand the job back, its attempt not counted, due again
        after the outage backoff; :meth:`run` then waits like a worker that cannot reach the queue."""
        self.away = exc
        delay = outage_backoff(2)
        released = self.services.queue.release(job.id, self.worker_id, retry_in=delay)
        log.warning("job %s (%s) handed back, attempt not counted: %s", job.id, job.kind, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return "waiting" if released else "lost"

    def _check_back(self) -> None:
        """Before claiming again after an outage: raise while what was away still is."""
        if self.away is not None:
            self.services.blobs.probe()
            self.away = None

    def _fail(self, job: JobInfo, exc: Exception) -> str:
        permanent = is_permanent(exc)
        message = f"{type(exc).__name__}: {exc}"
        if permanent:
            log.warning("job %s (%s) failed for good: %s", job.id, job.kind, message)
        else:
            # The traceback once per job: a mail retried every minute while SMTP is down would
            # otherwise bury the log under the same one.
            log.warning(
                "job %s (%s) failed (attempt %d/%d): %s", job.id, job.kind, job.attempts, job.max_attempts, message,
                exc_info=job.attempts <= 1,
            )
        retry_in = self.retry.delay(job.attempts) if self.retry is not None else None
        status = self.services.queue.fail(job.id, self.worker_id, message, retry=not permanent, retry_in=retry_in)
        if status is None:
            return "lost"
        return {"queued": "retry"}.get(status, status)

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set: claim, run, and wait for new jobs when there are none."""
        log.info("worker %s started (kinds: %s)", self.worker_id, ", ".join(self.kinds))
        self.report_presence(force=True)
        failures = 0
        away = "the queue"
        try:
            while not stop.is_set():
                try:
                    self._check_back()
                    outcome = self.run_once(stop)
                    if outcome == "waiting":
                        assert self.away is not None
                        raise self.away
                except Exception as exc:  # noqa: BLE001 - the database or the storage may be away: wait, try again
                    failures += 1
                    delay = outage_backoff(failures)
                    if isinstance(exc, DecodeBusyError):
                        away, what = "decoding", "no room to decode pictures now"
                    elif is_outage(exc):
                        away, what = "the storage", "the storage is away"
                    else:
                        away, what = "the queue", "cannot reach the queue"
                    # One traceback per outage; then one line per try, so a long outage does not
                    # bury the log.
                    log.warning(
                        "worker %s: %s (%s: %s); try %d, again in %.1f s",
                        self.worker_id, what, type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                        failures, delay, exc_info=failures == 1 and not is_outage(exc),
                    )
                    stop.wait(delay)
                    continue
                if failures:
                    log.warning("worker %s: %s answers again after %d failed tries", self.worker_id, away, failures)
                    failures = 0
                self.report_presence()
                if outcome is None and not stop.is_set():
                    try:
                        self.services.queue.wait_for_jobs(self.idle_wait, kinds=self.kinds)
                    except Exception:  # noqa: BLE001
                        stop.wait(self.idle_wait)
        finally:
            try:
                self.services.queue.forget_worker(self.worker_id)
            except Exception:  # noqa: BLE001
                log.warning("worker %s: could not remove its presence row", self.worker_id)
            log.info("worker %s stopped", self.worker_id)


def start_worker_threads(services: Services, count: int, stop: threading.Event, *, kinds: Sequence[str] | None = None) -> list[threading.Thread]:
    """``count`` workers as daemon threads of this process; they end when ``stop`` is set."""
    threads = []
    handlers = load_handlers()
    for index in range(count):
        worker = Worker(services, kinds=kinds, handlers=handlers)
        thread = threading.Thread(target=worker.run, args=(stop,), name=f"worker-{index + 1}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def start_mail_sender(services: Services, stop: threading.Event) -> threading.Thread:
    """The mail sender: a worker of ``mail.send`` jobs alone, with the mailer's backoff, as a
    daemon thread of this process; it ends when ``stop`` is set."""
    from atelier.service.mail import MAIL_JOB

    mailer = services.mailer
    worker = Worker(
        services, kinds=[MAIL_JOB], handlers={MAIL_JOB: mailer.send}, retry=mailer.retry,
        worker_id=f"{default_worker_id()}:mail",
    )
    thread = threading.Thread(target=worker.run, args=(stop,), name="mail-sender", daemon=True)
    thread.start()
    return thread
