"""Queue control for the operator: list, show, cancel, retry and re-prioritise jobs.

The same verbs serve the HTML admin page (:mod:`atelier.web.admin`), the JSON API under
``/api/v1/admin/jobs`` (:mod:`atelier.web.jobs_api`) and ``atelier jobs`` (:mod:`atelier.cli.jobs`).
The actions themselves are the admin page's (:mod:`atelier.service.admin`), so a retry from the
command line puts a failed artwork back to "queued" exactly as the button does; this module adds
what a script needs: a refusal that says why (no such job, or a job in a state the verb does
not apply to) instead of a silent False.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from atelier.service import admin
from atelier.service.context import Services
from atelier.store.db import JobStatus
from atelier.store.queue import JobInfo

#: Priorities an operator may set (higher runs first); the admin page clamps to the same range.
PRIORITY_RANGE = (-1000, 1000)
#: Most jobs one list returns.
MAX_LIST = 500

CANCELLABLE = (JobStatus.QUEUED, JobStatus.RUNNING)
RETRYABLE = (JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED)
REPRIORITISABLE = (JobStatus.QUEUED, JobStatus.RUNNING)


class JobControlError(Exception):
    """An operator's request that cannot be done; ``code`` is for machines, the message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class JobNotFoundError(JobControlError):
    def __init__(self, job_id: int) -> None:
        super().__init__("not_found", f"no job {job_id}")


class JobStateError(JobControlError):
    def __init__(self, job: JobInfo, verb: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            "conflict", f"job {job.id} is {job.status}: only {' or '.join(allowed)} jobs can be {verb}"
        )


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class JobView:
    """A job as the operator sees it; :meth:`public` is the JSON of the API and ``--json``."""

    job: JobInfo
    position: int | None  # place among queued jobs of its kind (1 = next), when queued

    def public(self, *, full: bool = False) -> dict[str, Any]:
        job = self.job
        detail = job.progress_detail or {}
        out: dict[str, Any] = {
            "id": job.id,
            "kind": job.kind,
            "status": job.status,
            "priority": job.priority,
            "attempts": job.attempts,
            "max_attempts": job.max_attempts,
            "progress": round(job.progress, 4),
            "stage": detail.get("stage"),
            "position": self.position,
            "worker": job.lease_owner,
            "lease_expires_at": _time(job.lease_expires_at),
            "run_at": _time(job.run_at),
            "created_at": _time(job.created_at),
            "updated_at": _time(job.updated_at),
            "started_at": _time(job.started_at),
            "finished_at": _time(job.finished_at),
            "last_error": job.last_error,
        }
        if full:
            out |= {
                "payload": job.payload,
                "progress_detail": job.progress_detail,
                "output_key": job.output_key,
                "preview_key": job.preview_key,
                "result": job.result,
            }
        return out


def _view(services: Services, job: JobInfo) -> JobView:
    position = services.queue.position(job.id) if job.status == JobStatus.QUEUED else None
    return JobView(job=job, position=position)


def list_jobs(
    services: Services,
    *,
    statuses: list[str] | None = None,
    kinds: list[str] | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[JobView]:
    """Jobs newest first; unknown statuses are refused (a typo would otherwise list nothing)."""
    unknown = [s for s in statuses or [] if s not in JobStatus.ALL]
    if unknown:
        raise JobControlError(
            "bad_request", f"unknown status {', '.join(unknown)} (one of {', '.join(JobStatus.ALL)})"
        )
    if not 1 <= limit <= MAX_LIST:
        raise JobControlError("bad_request", f"limit must be between 1 and {MAX_LIST}, got {limit}")
    jobs = services.queue.list_jobs(statuses=statuses, kinds=kinds, limit=limit, before_id=before_id)
    return [_view(services, job) for job in jobs]


def show_job(services: Services, job_id: int) -> JobView:
    job = services.queue.get(job_id)
    if job is None:
        raise JobNotFoundError(job_id)
    return _view(services, job)


def cancel_job(services: Services, job_id: int) -> JobView:
    """Cancel a queued or running job (a running one's worker drops it at its next heartbeat)."""
    job = show_job(services, job_id).job
    if job.status not in CANCELLABLE or not admin.cancel_job(services, job_id):
        raise JobStateError(services.queue.get(job_id) or job, "cancelled", CANCELLABLE)
    return show_job(services, job_id)


def retry_job(services: Services, job_id: int) -> JobView:
    """Queue a failed, dead or cancelled job again, attempts starting over."""
    job = show_job(services, job_id).job
    if job.status not in RETRYABLE or not admin.retry_job(services, job_id):
        raise JobStateError(services.queue.get(job_id) or job, "retried", RETRYABLE)
    return show_job(services, job_id)


def set_priority(services: Services, job_id: int, priority: int) -> JobView:
    """Change a waiting or running job's priority (higher runs first)."""
    low, high = PRIORITY_RANGE
    if not low <= priority <= high:
        raise JobControlError("bad_request", f"priority must be between {low} and {high}, got {priority}")
    job = show_job(services, job_id).job
    if job.status not in REPRIORITISABLE or not admin.set_priority(services, job_id, priority):
        raise JobStateError(services.queue.get(job_id) or job, "re-prioritised", REPRIORITISABLE)
    return show_job(services, job_id)
