"""Commissions: order -> queued -> painting -> preview ready (mail with the link) -> sale -> HD.

:func:`order_artwork` keeps the photo, then records the artwork and its painting job in ONE
transaction: either both exist or neither. A worker claims the job and runs
:func:`paint_preview`: the style's recipe painted at most ``ATELIER_PREVIEW_MAX_SIZE`` pixels
wide, finished and watermarked, stored under a key fixed by the artwork (a job that runs twice
overwrites its picture), and a mail queued in the same transaction as the status change, once
(a dedupe key) however often the job runs.

The buyer's links carry tokens of 192 random bits (:func:`atelier.store.db.new_token`), not
derived from any id; the status page uses the artwork's random public id. Lookups by token go
through the unique index and are then compared in constant time.

Painting itself is :func:`atelier.service.painting.render_painting` with the style's Gatys
recipe scaled to the preview (:func:`preview_recipe`);
``Services.painter`` replaces it where a test wants something quicker.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from atelier.service.errors import ServiceError
from atelier.art.blocks.images import encode_image
from atelier.art.progress import Progress, ProgressCallback
from atelier.service import i18n
from atelier.service.context import Services
from atelier.service.emails import EmailAddressError, validate_address
from atelier.service.mail import queue_mail
from atelier.service.uploads import get_upload, load_image, store_upload
from atelier.service.worker import JobContext, PermanentJobError, job_handler
from atelier.store.db import Artwork, JobStatus, Upload, transaction, utcnow
from atelier.store.queue import enqueue

if TYPE_CHECKING:
    from atelier.art.engines.gatys import Recipe
    from atelier.service.catalog import StyleEntry

log = logging.getLogger(__name__)

PREVIEW_JOB = "artwork.preview"
#: Painting a commission is slow and retrying costs as much again: fewer attempts than the default.
PREVIEW_ATTEMPTS = 3



class ArtworkStatus:
    """What the buyer sees: the painting's progress, then the sale's (atelier.service.payments)."""

    QUEUED = "queued"
    PAINTING = "painting"
    PREVIEW_READY = "preview_ready"
    FAILED = "failed"
    PAID = "paid"  # the payment is recorded and the HD job queued
    HD_PAINTING = "hd_painting"
    DELIVERED = "delivered"  # the HD picture is stored and its download link mailed

    #: Nothing more happens to the preview (a paid artwork's status page stops following it).
    FINAL = (PREVIEW_READY, FAILED, PAID, HD_PAINTING, DELIVERED)
    #: The preview exists: the ones a buyer can pay for or has paid for.
    SOLD = (PAID, HD_PAINTING, DELIVERED)


class OrderError(ServiceError):
    """An order that cannot be taken (the message is for the user)."""


class CommissionPainter(Protocol):
    """Paints a commission: the finished picture, longest side ``max_size``, watermarked (the
    preview) unless ``watermark`` is False (the paid HD version, see atelier.service.payments)."""

    def __call__(
        self, photo: Image.Image, style: StyleEntry, *, max_size: int, progress: ProgressCallback, watermark: bool = True
    ) -> Image.Image: ...


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

    def public(self, services: Services, *, locale: str | None = None) -> dict[str, Any]:
        entry = services.catalog.get(self.style)
        lang = locale or self.locale
        return {
            "id": self.id,
            "status": self.status,
            "style": self.style,
            "style_title": entry.title(lang) if entry is not None else self.style,
            "progress": round(self.progress, 4),
            "stage": self.stage,
            "position": self.position,
            "progress_image_url": f"/api/v1/artworks/{self.id}/progress.jpg?n={self.previews}" if self.previews else None,
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


def preview_key(artwork: Artwork) -> str:
    """Where an artwork's preview is stored: fixed by the artwork, so a second run overwrites."""
    return f"previews/{artwork.public_id}.jpg"


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
        artwork.job_id = enqueue(
            session,
            PREVIEW_JOB,
            {"artwork_id": artwork.id},
            max_attempts=PREVIEW_ATTEMPTS,
            output_key=preview_key(artwork),
        )
        public_id = artwork.public_id
    log.info("artwork %s ordered (%s, %s)", public_id, entry.name, locale)
    view = get_artwork(services, public_id)
    assert view is not None
    return view


def _find(session: Any, public_id: str) -> Artwork | None:
    if not public_id or len(public_id) > 64 or not public_id.isalnum():
        return None
    return session.scalars(select(Artwork).where(Artwork.public_id == public_id)).first()


def get_artwork(services: Services, public_id: str) -> ArtworkView | None:
    """The artwork with this public id, with its job's progress and place in the queue."""
    with transaction(services.engine, read_only=True) as session:
        artwork = _find(session, public_id)
        if artwork is None:
            return None
        row = (artwork.id, artwork.public_id, artwork.status, artwork.style, artwork.locale, artwork.created_at, artwork.job_id, artwork.preview_ready_at)
        token = artwork.preview_token if artwork.preview_key else None
    _, pid, status, style, locale, created_at, job_id, ready_at = row
    job = services.queue.get(job_id) if job_id is not None else None
    progress, stage, position, previews, error = 0.0, None, None, 0, None
    if job is not None:
        detail = job.progress_detail or {}
        progress = job.progress
        stage = detail.get("stage")
        previews = int(detail.get("previews") or 0)
        if job.status == JobStatus.QUEUED:
            position = services.queue.position(job.id)
            if job.attempts > 0:
                stage = "retrying"
        if job.status in (JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED) and status not in ArtworkStatus.FINAL:
            status = ArtworkStatus.FAILED
        if status == ArtworkStatus.FAILED:
            error = "painting failed"
    if status == ArtworkStatus.PREVIEW_READY or status in ArtworkStatus.SOLD:
        progress = 1.0
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
    )


def progress_image(services: Services, public_id: str) -> bytes | None:
    """The latest intermediate picture of an artwork being painted, if any."""
    with transaction(services.engine, read_only=True) as session:
        artwork = _find(session, public_id)
        job_id = artwork.job_id if artwork is not None else None
    if job_id is None:
        return None
    job = services.queue.get(job_id)
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
        artwork = session.scalars(select(Artwork).where(Artwork.preview_token == token)).first()
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


def preview_link(services: Services, token: str, locale: str) -> str:
    return f"{services.public_url}/{i18n.normalize(locale)}/a/{token}"


# ------------------------------------------------------------------------------------------------
# the worker's side


#: Iterations between two intermediate pictures of a painting (the worker stores one every
#: couple of seconds at most, whatever the engine sends).
PREVIEW_EVERY = 10


#: The fewest iterations a scaled-down preview pass keeps.
MIN_PREVIEW_ITERATIONS = 10


def preview_recipe(recipe: Recipe, max_size: int) -> Recipe:
    """The recipe painted at most ``max_size`` pixels: every pass shrunk by the same factor
    (coarse-to-fine proportions kept), and its iterations with it.

    Scaling the sizes alone leaves the work of the small passes as it was and still costs a
    minute per iteration of the last pass at 2 cores; scaling the iterations by the same factor
    keeps each pass's share of the painting and makes the preview's time shrink roughly with
    the cube of the factor, so a laptop demo finishes in a minute or two. The paid HD version
    paints the full recipe.
    """
    if recipe.size <= max_size:
        return recipe
    factor = max_size / recipe.size
    scaled = recipe.scaled(max_size)
    passes = tuple(
        replace(p, iterations=max(min(MIN_PREVIEW_ITERATIONS, p.iterations), round(p.iterations * factor)))
        for p in scaled.passes
    )
    return replace(scaled, passes=passes, name=f"{recipe.name}, preview {max_size} px")


def default_painter(services: Services) -> CommissionPainter:
    """The style's Gatys recipe scaled to the preview (:func:`preview_recipe`), its finishing
    and its watermark: :func:`atelier.service.painting.render_painting`."""

    def paint(
        photo: Image.Image, style: StyleEntry, *, max_size: int, progress: ProgressCallback, watermark: bool = True
    ) -> Image.Image:
        from atelier.service.painting import choose_recipe, load_encoder, render_painting

        device = services.loader.device
        models_dir = services.settings.models_path
        encoder, _ = load_encoder(models_dir, device=device)
        recipe = preview_recipe(choose_recipe(encoder.available_layers, style=style.source), max_size)
        return render_painting(
            photo,
            models_dir=models_dir,
            style=style.source,
            recipe=recipe,
            finishing=True,
            watermark=watermark,
            device=device,
            preview_every=PREVIEW_EVERY,
            progress=progress,
            encoder=encoder,
        ).image

    return paint


def watermarked_previews(progress: ProgressCallback, style: StyleEntry) -> ProgressCallback:
    """``progress`` with every intermediate picture watermarked like the preview: the status
    page shows the painting as it grows, and must not hand out an unmarked copy of it."""
    from atelier.art.blocks.finish import Watermark

    source = style.source
    mark = getattr(getattr(source, "finish", None), "watermark", None) or Watermark(text="Atelier", opacity=0.4, scale=0.22)

    def report(p: Progress) -> None:
        if p.preview is not None:
            p = replace(p, preview=mark.apply(p.preview))
        progress(p)

    return report


@job_handler(PREVIEW_JOB)
def paint_preview(ctx: JobContext) -> dict[str, Any]:
    """Paint an artwork's preview, store it, mark the artwork ready and mail its owner."""
    services = ctx.services
    artwork_id = int(ctx.payload["artwork_id"])
    with transaction(services.engine) as session:
        artwork = session.get(Artwork, artwork_id)
        if artwork is None:
            raise PermanentJobError(f"artwork {artwork_id} does not exist")
        sold = artwork.status in ArtworkStatus.SOLD
        if (artwork.status == ArtworkStatus.PREVIEW_READY or sold) and artwork.preview_key and services.blobs.exists(artwork.preview_key):
            # A second run after the first finished but could not record it: nothing to redo.
            return {"preview_key": artwork.preview_key, "repeated": True}
        if not sold:  # a sold artwork whose preview is remade keeps the sale's status
            artwork.status = ArtworkStatus.PAINTING
        style_name, upload_id, locale = artwork.style, artwork.content_upload_id, artwork.locale
        token, key = artwork.preview_token, preview_key(artwork)
        max_size = int((artwork.parameters or {}).get("preview_max_size") or services.settings.preview_max_size)
    entry = services.catalog.get(style_name)
    try:
        if entry is None or not entry.commission:
            raise PermanentJobError(f"style {style_name!r} is not in the catalog any more")
        if upload_id is None:
            raise PermanentJobError("the photo of this artwork is gone")
        photo = load_image(services, get_upload(services, upload_id))
        ctx.progress(0.0, stage="starting", force=True)
        painter: CommissionPainter = services.painter or default_painter(services)
        progress = watermarked_previews(ctx.progress_callback(end=0.98), entry)
        picture = painter(photo, entry, max_size=max_size, progress=progress)
        ctx.check()
        services.blobs.put(key, encode_image(picture, format="JPEG", quality=92), content_type="image/jpeg")
    except Exception as exc:
        if ctx.is_final_failure(exc):
            _mark_failed(services, artwork_id)
        else:
            _mark_waiting(services, artwork_id)
        raise
    with transaction(services.engine) as session:
        artwork = session.get(Artwork, artwork_id)
        assert artwork is not None
        if artwork.status not in ArtworkStatus.SOLD:
            artwork.status = ArtworkStatus.PREVIEW_READY
        artwork.preview_key = key
        artwork.preview_ready_at = utcnow()
        artwork.parameters = dict(artwork.parameters or {}) | {"preview_size": [picture.width, picture.height]}
        mail_owner(services, session, artwork, template="preview_ready", event="preview", link=preview_link(services, token, locale))
    log.info("artwork %s: preview ready (%dx%d)", ctx.payload.get("artwork_id"), picture.width, picture.height)
    return {"preview_key": key, "width": picture.width, "height": picture.height}


def mail_owner(services: Services, session: Session, artwork: Artwork, *, template: str, event: str, **fields: Any) -> None:
    """Queue ``template`` for the artwork's owner, in their language, in ``session``'s
    transaction; once per artwork and ``event`` however often the caller runs (a dedupe key).
    Every mail names the style (its title, or its name once it has left the catalog)."""
    entry = services.catalog.get(artwork.style)
    queue_mail(
        session,
        to=artwork.owner_email,
        template=template,
        locale=artwork.locale,
        dedupe_key=f"artwork:{artwork.id}:{event}",
        style=entry.title(artwork.locale) if entry is not None else artwork.style,
        **fields,
    )


def _mark_failed(services: Services, artwork_id: int) -> None:
    """The painting failed for good: tell the owner, once."""
    with transaction(services.engine) as session:
        artwork = session.get(Artwork, artwork_id)
        if artwork is None or artwork.status == ArtworkStatus.PREVIEW_READY or artwork.status in ArtworkStatus.SOLD:
            return
        artwork.status = ArtworkStatus.FAILED
        mail_owner(services, session, artwork, template="painting_failed", event="failed", link=f"{services.public_url}/{artwork.locale}/commission")


def _mark_waiting(services: Services, artwork_id: int) -> None:
    """The attempt failed or stopped; the job goes back to the queue."""
    with transaction(services.engine) as session:
        artwork = session.get(Artwork, artwork_id)
        if artwork is not None and artwork.status == ArtworkStatus.PAINTING:
            artwork.status = ArtworkStatus.QUEUED


def read_preview(services: Services, info: PreviewInfo) -> bytes | None:
    if not info.preview_key:
        return None
    try:
        return services.blobs.read(info.preview_key)
    except Exception:  # noqa: BLE001
        return None
