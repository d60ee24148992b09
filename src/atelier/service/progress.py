"""Progress a person can trust (issue 14, item 3): where a job stands, in numbers and in words.

A job's own fraction is what its worker stored (it never goes down: the queue keeps the larger
value, and :class:`atelier.art.progress.ProgressMeter` weights a painting's passes by their
work). This module adds what the pages and the API show with it:

* the stage in words, in the reader's language ("Painting, 2 of 3 passes");
* the seconds left: the worker's estimate, counted down since it was written; for a waiting job,
  the time of the jobs that go before it plus its own (how long the last jobs of each kind
  took, :meth:`atelier.store.queue.JobQueue.recent_seconds`), on the live workers;
* the place in the line while it waits;
* for a commission, one fraction across its two jobs, the preview then the HD picture, that
  never goes down either (:func:`commission_fraction`).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from atelier.service import i18n, lanes
from atelier.service.context import Services
from atelier.store.db import JobStatus
from atelier.store.queue import JobInfo, JobInLine

#: The preview's share of a commission's whole bar: the preview then the HD picture (about a
#: fifth of the work on the embedded default: a preview in well under a minute, the HD in a few).
#: Fixed, so that the bar never goes back when the HD job appears after the payment.
PREVIEW_SHARE = 0.2

#: Seconds a job of a kind takes when none has been done yet (the first commission of a new
#: server), before the history says better.
FIRST_GUESS_SECONDS: dict[str, float] = {
    "artwork.preview": 60.0,
    "artwork.hd": 600.0,
    "artwork.hd_ahead": 600.0,
    "video.stylize": 60.0,
    "batch.stylize": 60.0,
    "mail.send": 1.0,
}
DEFAULT_GUESS_SECONDS = 60.0
#: Workers heard of within this many seconds count as live (their presence is renewed every 15 s).
LIVE_WORKER_SECONDS = 60.0

_PASS = re.compile(r"^pass (\d+)/(\d+)$")


@dataclass(frozen=True)
class JobProgress:
    """A job as the person waiting for it sees it."""

    kind: str
    status: str
    #: The job's own fraction, 0..1 (1 once done).
    progress: float
    #: What it is doing, as the worker said it (``pass 2/3``, ``upscale``, ``frames``) or as the
    #: queue says it (``queued``, ``retrying``, ``paused``, ``preempted``, ``waiting``, ``done``).
    stage: str | None
    pass_: int | None
    passes: int | None
    step: int | None
    total: int | None
    eta_seconds: float | None
    #: Place in the line while queued (1 = next).
    position: int | None
    previews: int

    def stage_text(self, locale: str) -> str | None:
        """The stage in words, in ``locale``."""
        return stage_text(self, locale)

    def public(self, locale: str) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "progress": round(self.progress, 4),
            "stage": self.stage,
            "stage_text": self.stage_text(locale),
            "pass": self.pass_,
            "passes": self.passes,
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds),
            "position": self.position,
        }


def describe(services: Services, job: JobInfo, *, now: datetime | None = None) -> JobProgress:
    """Where ``job`` stands (a read or two of the queue for a waiting job's place and estimate)."""
    detail = job.progress_detail or {}
    stage = detail.get("stage")
    pass_, passes = _int(detail.get("pass")), _int(detail.get("passes"))
    if pass_ is None and isinstance(stage, str) and (match := _PASS.match(stage)):
        pass_, passes = int(match.group(1)), int(match.group(2))
    position = eta = None
    progress = job.progress
    if job.status == JobStatus.QUEUED:
        position = services.queue.position(job.id)
        if stage not in ("preempted", "waiting"):
            stage = "retrying" if job.attempts > 0 else "queued"
        eta = estimate_wait(services, job)
    elif job.status == JobStatus.RUNNING:
        if detail.get("paused"):
            stage = "paused"
        eta = _running_eta(services, job, now=now)
    elif job.status == JobStatus.DONE:
        stage, progress, eta = "done", 1.0, 0.0
    return JobProgress(
        kind=job.kind,
        status=job.status,
        progress=progress,
        stage=stage,
        pass_=pass_,
        passes=passes,
        step=_int(detail.get("step")),
        total=_int(detail.get("total")),
        eta_seconds=eta,
        position=position,
        previews=int(detail.get("previews") or 0),
    )


def finished(p: JobProgress) -> JobProgress:
    """``p`` as it stands once its picture is recorded: the artwork may say so a moment before
    the queue does (its status changes in the transaction that stores the picture; the job is
    marked done just after)."""
    return replace(p, progress=1.0, stage="done", eta_seconds=0.0, position=None)


def commission_fraction(preview: JobProgress | None, hd: JobProgress | None, *, preview_done: bool, delivered: bool) -> float:
    """One fraction for a whole commission: the preview fills the first :data:`PREVIEW_SHARE`,
    the HD picture the rest. It never goes down from the order to the download: the preview's
    own fraction never does, and the HD job starts where the preview ended."""
    if delivered:
        return 1.0
    if hd is not None:
        return PREVIEW_SHARE + (1.0 - PREVIEW_SHARE) * hd.progress
    if preview_done:
        return PREVIEW_SHARE
    return PREVIEW_SHARE * (preview.progress if preview is not None else 0.0)


# ------------------------------------------------------------------------------------------------
# estimates


def typical_seconds(services: Services, kind: str) -> float:
    """How long a job of ``kind`` takes: the median of the last few done, else a first guess."""
    try:
        recent = services.queue.recent_seconds(kind, limit=9)
    except Exception:  # noqa: BLE001 - an estimate is not worth an error page
        recent = []
    if recent:
        return float(statistics.median(recent))
    return FIRST_GUESS_SECONDS.get(kind, DEFAULT_GUESS_SECONDS)


def _running_eta(services: Services, job: JobInfo | JobInLine, *, now: datetime | None = None) -> float | None:
    detail = job.progress_detail or {}
    if detail.get("paused"):
        return None
    written = detail.get("eta_seconds")
    if isinstance(written, (int, float)):
        updated = getattr(job, "updated_at", None)
        if updated is None:
            return float(written)
        since = ((now or datetime.now(UTC)) - updated).total_seconds()
        return max(0.0, float(written) - max(0.0, since))
    return typical_seconds(services, job.kind) * (1.0 - job.progress)


def estimate_wait(services: Services, job: JobInfo) -> float:
    """Seconds until a queued job is done: the work that goes before it (the running jobs that
    will not step aside for it, the queued ones a claim takes first, of the kinds its workers
    run), shared by the live workers that can run it, plus its own."""
    own_lane = lanes.lane_of(job.kind)
    cache: dict[str, float] = {}

    def typical(kind: str) -> float:
        if kind not in cache:
            cache[kind] = typical_seconds(services, kind)
        return cache[kind]

    try:
        workers = services.queue.workers(seen_within=timedelta(seconds=LIVE_WORKER_SECONDS))
    except Exception:  # noqa: BLE001
        workers = []
    # The workers that can run this job, and the kinds they run: a job of another kind (mail,
    # which its own sender runs) does not go before it.
    mine = [w for w in workers if not w.kinds or job.kind in w.kinds]
    kinds = None if not mine or any(not w.kinds for w in mine) else {k for w in mine for k in (w.kinds or [])}
    ahead = 0.0
    for other in services.queue.ahead_of(job.id):
        if kinds is not None and other.kind not in kinds:
            continue
        if other.status == JobStatus.RUNNING:
            if other.priority < own_lane.priority and lanes.lane_of(other.kind).preempt is not None:
                continue  # it steps aside for this one at its next iteration
            ahead += _running_eta(services, other) or 0.0
        else:
            ahead += typical(other.kind) * (1.0 - other.progress)
    return ahead / max(1, len(mine)) + typical(job.kind) * (1.0 - job.progress)


# ------------------------------------------------------------------------------------------------
# words


def stage_text(p: JobProgress, locale: str) -> str | None:
    """``p``'s stage in words a person understands, in ``locale``."""
    _ = lambda message: i18n.gettext(locale, message)  # noqa: E731
    stage = p.stage
    if stage == "queued":
        if p.position == 1:
            return _("Waiting: next in line")
        if p.position:
            return _("Waiting: number %(position)s in line") % {"position": p.position}
        return _("Waiting in line")
    if stage == "retrying":
        return _("Trying again after a problem")
    if stage == "preempted":
        return _("Waiting for a quicker job to finish")
    if stage == "paused":
        return _("Paused for a quicker job; it carries on in a moment")
    if stage == "waiting":
        return _("Waiting for this machine to be ready")
    if stage == "starting":
        return _("Getting ready")
    if stage == "done":
        return _("Done")
    if p.pass_ is not None and p.passes and stage not in ("finish", "upscale"):
        return _("Painting, %(pass)s of %(passes)s passes") % {"pass": p.pass_, "passes": p.passes}
    if stage == "finish":
        return _("Finishing touches")
    if stage == "upscale":
        return _("Enlarging to full size")
    if stage == "parts" and p.step is not None and p.total:
        return _("Painting the clip, part %(step)s of %(total)s") % {"step": p.step, "total": p.total}
    if stage == "frames":
        if p.step is not None and p.total:
            return _("Painting the frames, %(step)s of %(total)s") % {"step": p.step, "total": p.total}
        return _("Painting the frames")
    if stage:
        return _("Painting…")
    return None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


__all__ = [
    "PREVIEW_SHARE",
    "JobProgress",
    "commission_fraction",
    "describe",
    "estimate_wait",
    "finished",
    "stage_text",
    "typical_seconds",
]
