"""Commissions, the buyer's side: ordering, the status page's view, the preview link.

:func:`order_artwork` keeps the photo, then records the artwork and its painting job in ONE
transaction: either both exist or neither. A worker claims the job and paints the preview
(:mod:`atelier.service.commission.job`): the style's recipe painted at most
``ATELIER_PREVIEW_MAX_SIZE`` pixels wide, finished and watermarked, stored under a key fixed by
the artwork (a job that runs twice overwrites its picture), and a mail queued in the same
transaction as the status change, once (a dedupe key) however often the job runs.

The buyer's links carry tokens of 192 random bits (:func:`atelier.store.db.new_token`), not
derived from any id; the status page uses the artwork's random public id. Lookups by token go
through the unique index and are then compared in constant time.

The statuses and their moves are :mod:`atelier.service.commission.status`.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from atelier.service import i18n
from atelier.service.commission.stages import PREVIEW
from atelier.service.commission.status import ArtworkStatus
from atelier.service.context import Services
from atelier.service.emails import EmailAddressError, validate_address
from atelier.service.errors import ServiceError
from atelier.service.progress import JobProgress, commission_fraction, describe, finished
from atelier.service.uploads import get_upload, store_upload
from atelier.store.commissions import artwork_by_public_id, artwork_with_preview_token
from atelier.store.db import Artwork, JobStatus, Upload, transaction

log = logging.getLogger(__name__)


class OrderError(ServiceError):
    """An order that cannot be taken (the message is for the user)."""


@dataclass(frozen=True)
class ArtworkView:
    """An artwork as its owner's status page and the API see it."""

    id: str
    status: str
    style: str
    locale: str
    created_at: datetime
    progress: float
    stage: str | None
    position: int | None
    previews: int
    error: str | None
    preview_ready_at: datetime | None
    #: The mailed link's token, once the preview exists (its page is the status page's next step).
    preview_token: str | None = None
    #: The job the commission is at (the HD job once paid for, else the preview's), as
    #: atelier.service.progress describes it, and which of the two it is ("preview" or "hd").
    job: JobProgress | None = None
    phase: str = "preview"

    def public(self, services: Services, *, locale: str | None = None) -> dict[str, Any]:
        entry = services.catalog.get(self.style)
        lang = locale or self.locale
        job = self.job.public(lang) if self.job is not None else None
        return {
            "id": self.id,
            "status": self.status,
            "style": self.style,
            "style_title": entry.title(lang) if entry is not None else self.style,
            # The whole commission's fraction (preview then HD): never goes down.
            "progress": round(self.progress, 4),
            "stage": self.stage,
            "stage_text": job["stage_text"] if job else None,
            "pass": job["pass"] if job else None,
            "passes": job["passes"] if job else None,
            "eta_seconds": job["eta_seconds"] if job else None,
            "position": self.position,
            "job": job | {"phase": self.phase} if job else None,
            "preview_url": f"/a/{self.preview_token}/preview.jpg" if self.preview_token else None,
            "progress_image_url": f"/api/v1/artworks/{self.id}/progress.jpg?job={self.phase}&n={self.previews}" if self.previews else None,
            "status_url": f"/api/v1/artworks/{self.id}",
            "events_url": f"/api/v1/artworks/{self.id}/events",
            "page_url": f"/{lang}/artworks/{self.id}",
            "created_at": self.created_at.isoformat(),
            "preview_ready_at": self.preview_ready_at.isoformat() if self.preview_ready_at else None,
            "preview_page_url": f"/{lang}/a/{self.preview_token}" if self.preview_token else None,
            "error": self.error,
        }


def check_email(email: str) -> str:
    """The address, checked (:func:`atelier.service.emails.validate_address`); :class:`OrderError` if not."""
    try:
        return validate_address(email)
    except EmailAddressError as exc:
        raise OrderError(f"that email address does not look right; please check it ({exc})") from None


def order_artwork(
    services: Services,
    *,
    style_name: str,
    email: str,
    locale: str,
    content: bytes | None = None,
    content_id: str | None = None,
) -> ArtworkView:
    """Take a commission: the photo (bytes or an upload id), a hand-picked style, an email."""
    email = check_email(email)
    locale = i18n.normalize(locale)
    entry = services.catalog.get(style_name or "")
    if entry is None or not entry.commission:
        raise OrderError("choose one of the hand-picked styles for a commission")
    if (content is None) == (content_id is None):
        raise OrderError("send one photo")
    if content is not None:
        # Temporary until the artwork is recorded: if that fails (the database goes away
        # between the two), the photo is one reconcile expires, not a kept orphan.
        upload, _ = store_upload(services, content, kind="content", temporary=True)
    else:
        assert content_id is not None
        upload = get_upload(services, content_id)
        if upload.kind != "content" or not upload.sha256:
            raise OrderError("that upload is not a photo")
    with transaction(services.engine) as session:
        # Kept for good in the same transaction as the artwork that needs it.
        kept = session.get(Upload, upload.id)
        if kept is None:
            raise OrderError("that photo is gone; send it again")
        kept.temporary = False
        kept.expires_at = None
        artwork = Artwork(
            owner_email=email,
            locale=locale,
            style=entry.name,
            parameters={"preview_max_size": services.settings.preview_max_size},
            status=ArtworkStatus.QUEUED,
            content_upload_id=upload.id,
        )
        session.add(artwork)
        session.flush()
        artwork.job_id = PREVIEW.enqueue(session, artwork)
        public_id = artwork.public_id
    log.info("artwork %s ordered (%s, %s)", public_id, entry.name, locale)
    view = get_artwork(services, public_id)
    assert view is not None
    return view


def _find(session: Any, public_id: str) -> Artwork | None:
    if not public_id or len(public_id) > 64 or not public_id.isalnum():
        return None
    return artwork_by_public_id(session, public_id)


def get_artwork(services: Services, public_id: str) -> ArtworkView | None:
    """The artwork with this public id, with its job's progress and place in the queue."""
    with transaction(services.engine, read_only=True) as session:
        artwork = _find(session, public_id)
        if artwork is None:
            return None
        row = (artwork.id, artwork.public_id, artwork.status, artwork.style, artwork.locale, artwork.created_at, artwork.job_id, artwork.preview_ready_at, (artwork.hd_job_id or (artwork.parameters or {}).get("hd_job_id")))
        token = artwork.preview_token if artwork.preview_key else None
    _, pid, status, style, locale, created_at, job_id, ready_at, hd_job_id = row
    job = services.queue.get(job_id) if job_id is not None else None
    hd_job = services.queue.get(int(hd_job_id)) if hd_job_id is not None and status in ArtworkStatus.SOLD else None
    stage, position, previews, error = None, None, 0, None
    preview_done = status == ArtworkStatus.PREVIEW_READY or status in ArtworkStatus.SOLD
    preview_progress = describe(services, job) if job is not None else None
    hd_progress = describe(services, hd_job) if hd_job is not None else None
    if preview_done and preview_progress is not None:
        preview_progress = finished(preview_progress)
    if status == ArtworkStatus.DELIVERED and hd_progress is not None:
        hd_progress = finished(hd_progress)
    # The status follows the job the commission is at: the HD job once paid for.
    current, phase = (hd_progress, "hd") if hd_progress is not None else (preview_progress, "preview")
    if current is not None:
        stage, position, previews = current.stage, current.position, current.previews
    if job is not None:
        if job.status in (JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED) and status not in ArtworkStatus.FINAL:
            status = ArtworkStatus.FAILED
        if status == ArtworkStatus.FAILED:
            error = "painting failed"
    progress = commission_fraction(
        preview_progress,
        hd_progress,
        preview_done=preview_done,
        delivered=status == ArtworkStatus.DELIVERED,
    )
    return ArtworkView(
        id=pid,
        status=status,
        style=style,
        locale=locale,
        created_at=created_at,
        progress=progress,
        stage=stage,
        position=position,
        previews=previews,
        error=error,
        preview_ready_at=ready_at,
        preview_token=token,
        job=current,
        phase=phase,
    )


def progress_image(services: Services, public_id: str, *, phase: str = "preview") -> bytes | None:
    """The latest intermediate picture of an artwork being painted, if any: of its preview,
    or of its HD picture (``phase="hd"``, watermarked like the preview's)."""
    with transaction(services.engine, read_only=True) as session:
        artwork = _find(session, public_id)
        job_id = artwork.job_id if artwork is not None else None
        if artwork is not None and phase == "hd":
            job_id = (artwork.hd_job_id or (artwork.parameters or {}).get("hd_job_id")) if artwork.status in ArtworkStatus.SOLD else None
    if job_id is None:
        return None
    job = services.queue.get(int(job_id))
    if job is None or not job.preview_key:
        return None
    try:
        return services.blobs.read(job.preview_key)
    except Exception:  # noqa: BLE001 - gone (job purged, blob reconciled): nothing to show
        return None


@dataclass(frozen=True)
class PreviewInfo:
    """What the preview page shows."""

    public_id: str
    status: str
    style: str
    locale: str
    preview_key: str | None
    width: int | None
    height: int | None


def artwork_by_preview_token(services: Services, token: str) -> PreviewInfo | None:
    """The artwork a preview link names, or None. Constant-time comparison after the lookup."""
    if not token or len(token) > 64:
        return None
    with transaction(services.engine, read_only=True) as session:
        artwork = artwork_with_preview_token(session, token)
        if artwork is None or not hmac.compare_digest(artwork.preview_token.encode(), token.encode()):
            return None
        size = (artwork.parameters or {}).get("preview_size") or [None, None]
        return PreviewInfo(
            public_id=artwork.public_id,
            status=artwork.status,
            style=artwork.style,
            locale=artwork.locale,
            preview_key=artwork.preview_key,
            width=size[0],
            height=size[1],
        )


def read_preview(services: Services, info: PreviewInfo) -> bytes | None:
    if not info.preview_key:
        return None
    try:
        return services.blobs.read(info.preview_key)
    except Exception:  # noqa: BLE001
        return None
