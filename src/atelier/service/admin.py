"""What the operator view shows and does: the queue (cancel, retry, priority), recent artworks,
workers and their heartbeats, failures with their errors, the outbox.

Access is a shared secret, ATELIER_ADMIN_TOKEN, compared in constant time; the web layer turns
a correct token into a session kept in the database (:func:`session_value`), which signing out
ends (:func:`end_session`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from atelier.service.context import Services
from atelier.store import outbox, sessions
from atelier.store.overview import artworks_of_job, recent_artworks, recent_failures, recent_jobs
from atelier.store.db import Job, JobStatus, transaction

#: How long an operator's session lasts.
SESSION_SECONDS = 8 * 3600


def check_token(services: Services, given: str | None) -> bool:
    """Whether ``given`` is the admin token (constant time). Always False when none is set."""
    expected = services.settings.admin_token
    if not expected or not given:
        return False
    return hmac.compare_digest(hashlib.sha256(expected.encode()).digest(), hashlib.sha256(given.encode()).digest())


def _token_digest(services: Services) -> str:
    # Bound to the token and the secret key: changing either ends every session.
    token = services.settings.admin_token or ""
    return hmac.new(services.secret, f"admin-token:{token}".encode(), hashlib.sha256).hexdigest()


def session_value(services: Services, *, now: float | None = None) -> str:
    """Open a session for an operator who gave the right token; the cookie's value, valid for
    SESSION_SECONDS or until :func:`end_session`."""
    return sessions.open_session(services.engine, token_digest=_token_digest(services), lifetime_seconds=SESSION_SECONDS, now=now)


def check_session(services: Services, value: str | None, *, now: float | None = None) -> bool:
    """Whether the cookie ``value`` is an open session (always False when no token is set)."""
    if not services.settings.admin_token:
        return False
    return sessions.session_is_open(services.engine, value, token_digest=_token_digest(services), now=now)


def end_session(services: Services, value: str | None) -> None:
    """Sign out: the session is gone for every copy of its cookie."""
    sessions.close_session(services.engine, value)


@dataclass(frozen=True)
class Overview:
    queue: dict[str, Any]
    jobs: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    artworks: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    outbox: dict[str, int]
    dead_mails: list[dict[str, Any]]


def _age(when: datetime | None, now: datetime) -> str:
    if when is None:
        return ""
    seconds = max(0, int((now - when).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _quality(result: dict[str, Any] | None) -> str:
    """A painting job's check before delivery, in a few words (empty for other jobs)."""
    check = (result or {}).get("check")
    if not isinstance(check, dict):
        return ""
    text = f"style {check.get('style_distance', float('nan')):.2f}, content {check.get('content_distance', float('nan')):.2f}"
    return text if check.get("passed", True) else f"{text} (below the bar)"


def _job_row(job: Job, now: datetime) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "priority": job.priority,
        "attempts": f"{job.attempts}/{job.max_attempts}",
        "progress": round(float(job.progress) * 100),
        "worker": job.lease_owner or "",
        "age": _age(job.created_at, now),
        "updated": _age(job.updated_at, now),
        "error": job.last_error or "",
        "quality": _quality(job.result),
        "can_cancel": job.status in (JobStatus.QUEUED, JobStatus.RUNNING),
        "can_retry": job.status in (JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED),
    }


def overview(services: Services, *, status: str | None = None, limit: int = 50) -> Overview:
    """Everything the admin page shows."""
    from atelier.store.db import utcnow

    now = utcnow()
    stats = services.queue.stats()
    with transaction(services.engine, read_only=True) as session:
        jobs = [_job_row(j, now) for j in recent_jobs(session, status=status, limit=limit)]
        failures = [_job_row(j, now) for j in recent_failures(session, limit=20)]
        artworks = [
            {
                "id": a.public_id,
                "style": a.style,
                "status": a.status,
                "email": a.owner_email,
                "locale": a.locale,
                "age": _age(a.created_at, now),
                "job_id": a.job_id,
            }
            for a in recent_artworks(session, limit=20)
        ]
        mails = outbox.counts(session)
        dead_mails = [
            {"id": m.id, "to": m.to_addr, "subject": m.subject, "attempts": m.attempts, "error": m.last_error or ""}
            for m in outbox.dead_mails(session, limit=10)
        ]
    workers = [
        {
            "id": w.id,
            "host": w.host,
            "pid": w.pid,
            "kinds": ", ".join(w.kinds or ["all"]),
            "seen": _age(w.last_seen_at, now),
            "stale": (now - w.last_seen_at) > timedelta(minutes=2),
            "job": w.current_job_id,
        }
        for w in services.queue.workers()
    ]
    queue = {
        "by_status": stats.by_status(),
        "by_kind": stats.counts,
        "oldest": _age(now - timedelta(seconds=stats.oldest_queued_age), now) if stats.oldest_queued_age else "",
        "expired_leases": stats.expired_leases,
    }
    return Overview(queue=queue, jobs=jobs, failures=failures, artworks=artworks, workers=workers, outbox=mails, dead_mails=dead_mails)


def cancel_job(services: Services, job_id: int) -> bool:
    return services.queue.cancel(job_id)


def retry_job(services: Services, job_id: int) -> bool:
    """Run a failed, dead or cancelled job again; its artwork goes back to "queued"."""
    ok = services.queue.requeue(job_id)
    if ok:
        with transaction(services.engine) as session:
            for artwork in artworks_of_job(session, job_id):
                if artwork.status == "failed":
                    artwork.status = "queued"
    return ok


def set_priority(services: Services, job_id: int, priority: int) -> bool:
    return services.queue.set_priority(job_id, max(-1000, min(1000, priority)))
