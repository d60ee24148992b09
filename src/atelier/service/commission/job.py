"""The one painting job of a commission: the preview and the HD picture are both painted here.

:func:`paint_stage` runs a :class:`~atelier.service.commission.stages.Stage`:

1. the artwork moves to the stage's "started" status (or the job returns at once when a run
   before it finished and only could not record it);
2. the photo is painted (:func:`paint_picture`: the style's Gatys recipe, scaled to the preview
   for the preview; or ``Services.painter`` where a test wants something quicker), finished,
   watermarked (the preview) or doubled with waifu2x (the HD picture);
3. the picture is stored under a key fixed by the artwork (a second run overwrites);
4. one transaction records it, moves the status and queues the stage's mail (a dedupe key: once
   however often the job runs).

An attempt that stops or fails moves the status back a step (the job is queued again), or, when
it was the last, tells the owner: the preview's "we could not paint it", the HD's "it is
delayed" (the buyer has paid; the operator retries from /admin).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image
from sqlalchemy.orm import Session

from atelier.art.blocks.images import encode_image
from atelier.art.progress import Progress, ProgressCallback
from atelier.runtime import release_memory
from atelier.service.commission.stages import HD, HD_AHEAD, PREVIEW, Stage, download_link, painting_key, preview_link, receipt_path
from atelier.service.commission.ahead import queue_hd_ahead
from atelier.service.commission.check import Check, NotPaintedError, check_painting
from atelier.service.commission.mails import mail_owner
from atelier.service.commission.status import ArtworkStatus, Event, move
from atelier.service.context import Services
from atelier.service.uploads import get_upload, load_image
from atelier.service.worker import JobContext, PermanentJobError, job_handler
from atelier.store.db import Artwork, transaction, utcnow

if TYPE_CHECKING:
    from atelier.art.engines.gatys import Recipe
    from atelier.service.catalog import StyleEntry

log = logging.getLogger(__name__)

#: Iterations between two intermediate pictures of a painting (the worker stores one every
#: couple of seconds at most, whatever the engine sends).
PREVIEW_EVERY = 10
#: The fewest iterations a scaled-down preview pass keeps.
MIN_PREVIEW_ITERATIONS = 10
#: The HD pass paints at this many times the preview's size (then waifu2x doubles it again).
HD_FACTOR = 2
#: The share of the recipe's last pass's iterations that the HD pass runs. It paints only the
#: detail finer than the preview (keep_low) and the line search converges in fewer steps:
#: measured on kite.jpg + Starry Night (768 px on a 384 px preview, the shallow recipe's 100
#: iterations, 2 cores), the delivered picture's loss stood at 2.06 after 30, 1.92 after 50
#: (118 s) and 1.84 after 100 (234 s): half the iterations keep pay -> download under 1.5 min
#: (78 s in `atelier bench commission`) for 4 % of the loss.
HD_ITERATION_SHARE = 0.5


class CommissionPainter(Protocol):
    """Paints a commission: the finished picture, longest side ``max_size``, watermarked (the
    preview) unless ``watermark`` is False (the HD version, doubled afterwards). What
    ``Services.painter`` holds where a test replaces the Gatys recipes with something quicker."""

    def __call__(
        self, photo: Image.Image, style: StyleEntry, *, max_size: int, progress: ProgressCallback, watermark: bool = True
    ) -> Image.Image: ...


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


def without_pictures(progress: ProgressCallback) -> ProgressCallback:
    """``progress`` with the intermediate pictures dropped."""

    def report(p: Progress) -> None:
        progress(replace(p, preview=None) if p.preview is not None else p)

    return report


@dataclass(frozen=True)
class Job:
    """What the job read from the artwork's row before painting."""

    artwork_id: int
    public_id: str
    style: str
    upload_id: str | None
    locale: str
    key: str
    max_size: int
    #: The preview's painting (PNG, before finishing and watermark), once the preview job kept it.
    painting_key: str | None = None


@dataclass(frozen=True)
class Picture:
    """What a stage painted: the picture to store (finished; watermarked for the preview) before
    any upscale, and the painting itself before finishing (None from a test's painter)."""

    image: Image.Image
    painting: Image.Image | None = None
    recipe: str = ""
    #: The painting's Gatys objective at its own size (None from a test's painter).
    objective: float | None = None
    #: The check before delivery (None from a test's painter).
    check: Check | None = None


def hd_recipe(recipe: Recipe, preview_size: int) -> Recipe | None:
    """What the HD job paints on from a preview painting whose longest side is ``preview_size``:
    the recipe's last pass at twice that size, or None when the preview already is the
    recipe's full size (the HD picture is then the preview's painting).

    The preview's passes are the recipe scaled down (:func:`preview_recipe`), so they are the
    HD's first passes: the pass added here paints the detail that twice the size can hold and
    keeps the preview's picture (``keep_low``), so the buyer receives the painting they chose
    (issue 14), not another one painted from the photo at many times the cost.
    """
    if recipe.size <= preview_size:
        return None
    last = recipe.passes[-1]
    iterations = max(MIN_PREVIEW_ITERATIONS, round(last.iterations * HD_ITERATION_SHARE))
    return replace(
        recipe, name=f"{recipe.name}, HD from the preview",
        passes=(replace(last, size=HD_FACTOR * preview_size, iterations=iterations),),
    )


def paint_picture(
    services: Services, stage: Stage, job: Job, photo: Image.Image, entry: StyleEntry, progress: ProgressCallback
) -> Picture:
    """The stage's picture of ``photo``: painted, finished, watermarked (the preview) or without
    the mark (the HD), before any upscale. The HD picture is painted on from the preview's
    painting when there is one (:func:`hd_recipe`; ``ATELIER_HD_FROM_PREVIEW``), else from the
    photo with the whole recipe. ``Services.painter`` paints when a test set one."""
    if services.painter is not None:
        painter: CommissionPainter = services.painter
        max_size = job.max_size if stage is PREVIEW else hd_size(services, entry)
        return Picture(painter(photo, entry, max_size=max_size, progress=progress, watermark=stage.watermark))

    from atelier.service.painting import Rendered, choose_recipe, finish_spec, load_encoder, postprocess, render_painting

    device = services.loader.device
    models_dir = services.settings.models_path
    encoder, _ = load_encoder(models_dir, device=device)  # once per process (cached), for both stages
    recipe = choose_recipe(encoder.available_layers, style=entry.source)
    start: Image.Image | None = None
    if stage is PREVIEW:
        recipe = preview_recipe(recipe, job.max_size)
    elif services.settings.hd_from_preview and job.painting_key:
        start = _read_painting(services, job.painting_key)
        if start is not None:
            following = hd_recipe(recipe, max(start.size))
            if following is None:
                finished, _ = postprocess(start, spec=finish_spec(entry.source, True), mark=None, models_dir=models_dir, device=device)
                return Picture(finished, start, "the preview's painting")
            recipe = following
            # Exactly HD_FACTOR times the preview's painting, so that every block of the HD
            # picture averages to one of its pixels.
            photo = photo.convert("RGB").resize((HD_FACTOR * start.width, HD_FACTOR * start.height), Image.Resampling.LANCZOS)

    # Decoded once: painted with, then measured against (the check).
    painting = entry.source.load_painting()

    def render(init: Image.Image | str | None, seed: int) -> Rendered:
        return render_painting(
            photo,
            models_dir=models_dir,
            style=entry.source,
            paintings=[painting],
            recipe=recipe,
            init=init,
            seed=seed,
            keep_low=start,
            finishing=True,
            watermark=stage.watermark,
            device=device,
            preview_every=PREVIEW_EVERY if stage.progress_pictures else 0,
            progress=_painting_only(progress),
            encoder=encoder,
        )

    def checked(rendered: Rendered) -> Check:
        settings = services.settings
        return check_painting(
            rendered.painted, photo=photo, painting=painting, encoder=encoder,
            passes=rendered.passes, from_photo=start is None,
            max_style_distance=settings.quality_max_style_distance, min_style_fall=settings.quality_min_style_fall,
        )

    rendered = render(start, 0)
    check = checked(rendered)
    if not check.passed and start is None:
        # Another start: seeded noise (Gatys et al.'s own), which no photo's quirks can stall.
        # (The job's progress bar holds where it is until the second painting passes it.)
        log.warning(
            "artwork %s: the %s painting did not converge (%s); painting it again from another start",
            job.public_id, stage.name, "; ".join(check.failures),
        )
        rendered = render("noise", 1)
        check = checked(rendered)
        if not check.passed:
            raise NotPaintedError(
                f"the {stage.name} painting did not converge from two starts ({'; '.join(check.failures)}): not delivered"
            )
    elif not check.passed:
        # Painted on from the preview the buyer saw and chose: delivered, the operator told.
        log.warning("artwork %s: the %s painting measures %s", job.public_id, stage.name, "; ".join(check.failures))
    log.info(
        "artwork %s: %s painting checked: style distance %.3f, content distance %.3f%s",
        job.public_id, stage.name, check.style_distance, check.content_distance,
        f", first pass removed {check.style_fall:.1%} of its style loss" if check.style_fall is not None else "",
    )
    return Picture(rendered.image, rendered.painted, recipe.summary(), rendered.objective, check)


def _read_painting(services: Services, key: str) -> Image.Image | None:
    import io

    try:
        # Our own PNG, written by the preview job: not a user's upload, no decoding limits.
        with Image.open(io.BytesIO(services.blobs.read(key))) as picture:
            return picture.convert("RGB")
    except Exception:  # noqa: BLE001 - gone or damaged: the HD is painted from the photo instead
        log.warning("the preview painting %s cannot be read; painting the HD picture from the photo", key, exc_info=True)
        return None


def _painting_only(progress: ProgressCallback) -> ProgressCallback:
    # The Gatys passes' reports; the finishing's own steps (finish, done) would be read as a
    # fraction of the whole and send the job's progress back down.
    def report(p: Progress) -> None:
        if p.stage.startswith("pass"):
            progress(p)

    return report


def paint_stage(ctx: JobContext, stage: Stage) -> dict[str, Any]:
    """Paint an artwork's picture for ``stage``, store it, move its status and mail its owner
    (a speculative stage: store it and tell nobody until a payment makes it the paid one)."""
    services = ctx.services
    artwork_id = int(ctx.payload["artwork_id"])
    result = f"{stage.name}_key"
    with transaction(services.engine) as session:
        artwork = session.get(Artwork, artwork_id)
        if artwork is None:
            raise PermanentJobError(f"artwork {artwork_id} does not exist")
        sold = artwork.status in ArtworkStatus.SOLD
        if stage.speculative and not sold:
            why = _not_ahead(services, artwork)
            if why:
                log.info("artwork %s: no HD painted ahead (%s)", artwork.public_id, why)
                return {"skipped": why}
        stored = _stored_key(artwork, stage)
        if stored and services.blobs.exists(stored):
            if stage is PREVIEW or artwork.status == ArtworkStatus.DELIVERED or not sold:
                # A second run after the first finished but could not record it: nothing to redo.
                return {result: stored, "repeated": True}
            # Painted ahead of the payment that has come since: only the delivery is left.
            size = tuple((artwork.parameters or {}).get("hd_size") or (0, 0))
            _record(services, session, stage, artwork, stored, size)  # type: ignore[arg-type]
            log.info("artwork %s: HD painted ahead, delivered", artwork.public_id)
            return {result: stored, "painted_ahead": True}
        if stage is HD and not sold:
            raise PermanentJobError(f"artwork {artwork_id} is not paid for ({artwork.status})")
        # A sold artwork whose preview is remade keeps the sale's status; an HD painted ahead
        # leaves the preview's status as it is (the table has no such move).
        move(artwork, stage.started)
        job = Job(
            artwork_id=artwork.id,
            public_id=artwork.public_id,
            style=artwork.style,
            upload_id=artwork.content_upload_id,
            locale=artwork.locale,
            key=stage.key(artwork),
            max_size=int((artwork.parameters or {}).get("preview_max_size") or services.settings.preview_max_size),
            painting_key=artwork.painting_key,
        )
    entry = services.catalog.get(job.style)
    try:
        if entry is None or (stage is PREVIEW and not entry.commission):
            raise PermanentJobError(f"style {job.style!r} is not in the catalog any more")
        if job.upload_id is None:
            raise PermanentJobError("the photo of this artwork is gone")
        photo = load_image(services, get_upload(services, job.upload_id))
        ctx.progress(0.0, stage="starting", force=True)
        report = ctx.progress_callback(end=stage.painting_share)
        progress = watermarked_previews(report, entry) if stage.progress_pictures else without_pictures(report)
        picture = paint_picture(services, stage, job, photo, entry, progress)
        ctx.check()
        image = picture.image
        if stage.upscale > 1:
            from atelier.service.painting import hd_denoise, upscale_picture

            ctx.progress(stage.painting_share, stage="upscale", force=True)
            image = upscale_picture(
                image, factor=stage.upscale, noise=hd_denoise(entry.source), models_dir=services.settings.models_path,
                device=services.loader.device,
            )
            ctx.check()
        kept = None
        if stage is PREVIEW and picture.painting is not None:
            kept = painting_key(job.public_id)
            services.blobs.put(kept, encode_image(picture.painting, format="PNG"), content_type="image/png")
        services.blobs.put(job.key, encode_image(image, format="JPEG", quality=stage.jpeg_quality), content_type="image/jpeg")
    except Exception as exc:
        _stopped(services, stage, artwork_id, final=ctx.is_final_failure(exc))
        raise
    with transaction(services.engine) as session:
        artwork = session.get(Artwork, artwork_id, with_for_update=True)
        assert artwork is not None
        if stage is PREVIEW:
            artwork.painting_key = kept or artwork.painting_key
            if services.settings.hd_ahead:
                queue_hd_ahead(session, artwork)
        if stage.speculative and artwork.status not in ArtworkStatus.SOLD:
            # Nobody has paid: kept for a payment to find, mailed to nobody.
            artwork.hd_key = job.key
            artwork.parameters = dict(artwork.parameters or {}) | {"hd_size": [image.width, image.height]}
            log.info("artwork %s: HD painted ahead (%dx%d, %s)", job.public_id, image.width, image.height, picture.recipe)
            return {result: job.key, "width": image.width, "height": image.height, "ahead": True, **_painted(picture)}
        _record(services, session, stage, artwork, job.key, image.size)
    log.info("artwork %s: %s ready (%dx%d, %s)", job.public_id, stage.name, image.width, image.height, picture.recipe or "test painter")
    return {result: job.key, "width": image.width, "height": image.height, **_painted(picture)}


def _painted(picture: Picture) -> dict[str, Any]:
    """What the job's result says of the painting (for the operator and ``atelier bench``)."""
    out: dict[str, Any] = {"recipe": picture.recipe} if picture.recipe else {}
    if picture.objective is not None:
        out["objective"] = round(picture.objective, 6)
    if picture.check is not None:
        out["check"] = picture.check.as_dict()
    return out


def _not_ahead(services: Services, artwork: Artwork) -> str | None:
    """Why an HD picture is not painted ahead for ``artwork`` now, or None."""
    if not services.settings.hd_ahead:
        return "ATELIER_HD_AHEAD is off"
    if artwork.status != ArtworkStatus.PREVIEW_READY:
        return f"the artwork is {artwork.status}"
    ready = artwork.preview_ready_at
    if ready is None or utcnow() - ready > timedelta(hours=services.settings.hd_ahead_hours):
        return f"the preview is older than {services.settings.hd_ahead_hours:g} hours"
    return None


def hd_size(services: Services, style: Any) -> int:
    """The longest side the style's recipe paints at full resolution (the preview scales it down
    to ATELIER_PREVIEW_MAX_SIZE; the paid version does not)."""
    from atelier.service.painting import choose_recipe, load_encoder

    encoder, _ = load_encoder(services.settings.models_path, device=services.loader.device)
    return int(choose_recipe(encoder.available_layers, style=getattr(style, "source", None)).size)


def _stored_key(artwork: Artwork, stage: Stage) -> str | None:
    """The stage's picture when a run before this one has recorded it (for the HD: also one
    painted ahead of the payment)."""
    if stage is PREVIEW:
        ready = artwork.status == ArtworkStatus.PREVIEW_READY or artwork.status in ArtworkStatus.SOLD
        return artwork.preview_key if ready else None
    return artwork.hd_key


def _record(services: Services, session: Session, stage: Stage, artwork: Artwork, key: str, size: tuple[int, int]) -> None:
    """The stage's picture is stored: record it on the artwork, move the status, queue the mail."""
    move(artwork, stage.done)
    if stage is PREVIEW:
        artwork.preview_key = key
        artwork.preview_ready_at = utcnow()
        artwork.parameters = dict(artwork.parameters or {}) | {"preview_size": list(size)}
        mail_owner(services, session, artwork, template=stage.mail_template, event=stage.mail_event,
                   link=preview_link(services.public_url, artwork.preview_token, artwork.locale))
        return
    settings = services.settings
    now = utcnow()
    if artwork.delivered_at is None:
        artwork.delivered_at = now
        artwork.download_expires_at = now + timedelta(hours=settings.download_ttl_hours)
        artwork.download_count = 0
        artwork.download_limit = settings.download_max_count
    artwork.hd_key = key
    artwork.parameters = dict(artwork.parameters or {}) | {"hd_size": list(size)}
    mail_owner(
        services,
        session,
        artwork,
        template=stage.mail_template,
        event=stage.mail_event,
        link=download_link(services.public_url, artwork.download_token),
        hours=round(settings.download_ttl_hours),
        count=settings.download_max_count,
    )


def _stopped(services: Services, stage: Stage, artwork_id: int, *, final: bool) -> None:
    """The attempt failed or stopped. With attempts left the artwork waits for the next one;
    when it was the last (``final``) its owner is told, once."""
    if stage.speculative:
        # Nobody is waiting for it: no mail. A payment that came meanwhile made it the paid job,
        # which the queue retries with the paid job's attempts.
        final = False
    with transaction(services.engine) as session:
        artwork = session.get(Artwork, artwork_id)
        if artwork is None:
            return
        if stage is PREVIEW:
            if not final:
                move(artwork, Event.PREVIEW_STOPPED)
            elif move(artwork, Event.PREVIEW_FAILED):
                mail_owner(services, session, artwork, template="painting_failed", event="failed",
                           link=f"{services.public_url}/{artwork.locale}/commission")
            return
        move(artwork, Event.HD_STOPPED)
        if final and artwork.status == ArtworkStatus.PAID:
            # The buyer has paid: told once that the file is delayed; the operator finds the dead
            # job in /admin, where "retry" sends it again (the download mail then goes out as usual).
            log.error("artwork %s: the HD job failed for good; retry it from /admin", artwork.public_id)
            link = f"{services.public_url}{receipt_path(artwork.public_id, artwork.locale)}"
            mail_owner(services, session, artwork, template="hd_delayed", event="hd_delayed", link=link)


@job_handler(PREVIEW.job_kind)
def paint_preview(ctx: JobContext) -> dict[str, Any]:
    """Paint an artwork's preview, store it, mark the artwork ready and mail its owner."""
    try:
        return paint_stage(ctx, PREVIEW)
    finally:
        # The painting's feature maps are freed and the allocator tuning keeps them: a
        # long-lived worker must not sit at its largest job's peak (issue 14).
        release_memory()


@job_handler(HD_AHEAD.job_kind)
def paint_hd_ahead(ctx: JobContext) -> dict[str, Any]:
    """Paint an artwork's HD picture before anyone paid for it, while the workers are idle: kept,
    mailed to nobody; a payment finds it and only sends the link (or, if the payment comes while
    it paints, makes this the paid job). Handed back to the queue for any other job."""
    try:
        return paint_stage(ctx, HD_AHEAD)
    finally:
        release_memory()


@job_handler(HD.job_kind)
def paint_hd(ctx: JobContext) -> dict[str, Any]:
    """Paint a paid artwork at full resolution without the watermark, double it with waifu2x,
    store it, mark the artwork delivered and mail the download link."""
    try:
        return paint_stage(ctx, HD)
    finally:
        release_memory()
