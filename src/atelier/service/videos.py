"""Videos for the instant journey: a clip and a style in, the painted clip out, as a queued job
(a clip takes longer than a request should).

``POST /api/v1/videos`` calls :func:`order_video`; a worker runs :func:`stylize_video_job`
(frames painted with the instant engines, the style encoded once so every frame gets the same
statistics, steadied with optical flow by :func:`atelier.art.engines.video.stylize_video`), stores the
clip under a key fixed by the video's id and mails a link when an address was given. The id is
128 random bits: the only way to find the video.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from atelier.art.blocks.images import fit_longest, to_tensor
from atelier.art.engines.protocol import paint
from atelier.service.catalog_sync import require_style
from atelier.service.context import Services
from atelier.service.i18n import normalize
from atelier.service.errors import StyleChoiceError
from atelier.service.progress import JobProgress, describe
from atelier.service.refs import StyleRef
from atelier.service.resolve import style_ref
from atelier.service.stylize import DEFAULT_STYLE_SIZE
from atelier.service.uploads import UploadInfo, get_upload, read_upload
from atelier.service.worker import JobContext, JobDeferred, PermanentJobError, job_handler
from atelier.service.lanes import priority_of
from atelier.store.db import JobStatus, transaction
from atelier.store.queue import JobInfo, enqueue

if TYPE_CHECKING:
    from atelier.art.engines.video import VideoInfo, VideoReport  # PyAV: imported where clips are painted

log = logging.getLogger(__name__)


VIDEO_JOB = "video.stylize"
#: Longest side a video is painted at unless asked otherwise (and at most ATELIER_INSTANT_MAX_SIZE).
VIDEO_SIZE = 512
#: Days a mailed link to a painted video works (S3 presigned links last at most 7 days).
VIDEO_LINK_DAYS = 7


@dataclass(frozen=True)
class VideoView:
    """A video job as the API shows it."""

    id: str
    status: str  # queued, processing, done, failed
    progress: float
    position: int | None
    result_url: str | None
    error: str | None
    #: The painted clip's size and the clip's own, once done (a clip is painted at most
    #: VIDEO_SIZE pixels: the page says so when it came out smaller).
    width: int | None = None
    height: int | None = None
    source_width: int | None = None
    source_height: int | None = None
    #: Where its job stands (atelier.service.progress): the stage in words and the time left.
    job: JobProgress | None = None

    def public(self, locale: str = "en") -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "progress": round(self.progress, 4),
            "stage": self.job.stage if self.job else None,
            "stage_text": self.job.stage_text(locale) if self.job else None,
            "eta_seconds": round(self.job.eta_seconds) if self.job and self.job.eta_seconds is not None else None,
            "position": self.position,
            "result_url": self.result_url,
            "status_url": f"/api/v1/videos/{self.id}",
            "error": self.error,
            "width": self.width,
            "height": self.height,
            "source_width": self.source_width,
            "source_height": self.source_height,
        }


def video_key(video_id: str) -> str:
    return f"videos/{video_id}.mp4"


def order_video(
    services: Services,
    *,
    upload: UploadInfo,
    style_name: str | None = None,
    style_upload: UploadInfo | None = None,
    alpha: float = 1.0,
    size: int | None = None,
    email: str | None = None,
    locale: str = "en",
) -> VideoView:
    """Queue the painting of a clip; its id (128 random bits) is the only way to find it."""
    if upload.kind != "video":
        raise StyleChoiceError("that upload is not a video")
    if not 0.0 <= alpha <= 1.0:
        raise StyleChoiceError(f"the strength (alpha) must be between 0 and 1, got {alpha}")
    if email:
        from atelier.service.artworks import check_email  # noqa: PLC0415 - artworks imports this module's peers

        email = check_email(email)
    # Resolve the style now, so that a bad name is refused before anything is queued.
    style_ref(services, name=style_name, upload=style_upload)
    video_id = secrets.token_hex(16)
    payload = {
        "video_id": video_id,
        "upload_id": upload.id,
        "style_name": style_name,
        "style_upload_id": style_upload.id if style_upload is not None else None,
        "alpha": alpha,
        "size": min(size or VIDEO_SIZE, services.settings.instant_max_size),
        "email": email or None,
        "locale": normalize(locale),
    }
    with transaction(services.engine) as session:
        enqueue(session, VIDEO_JOB, payload, priority=priority_of(VIDEO_JOB), max_attempts=3, output_key=video_key(video_id))
    view = get_video(services, video_id)
    assert view is not None
    return view


def _video_job(services: Services, video_id: str) -> JobInfo | None:
    if not video_id or len(video_id) != 32 or not video_id.isalnum():
        return None
    return services.queue.find(VIDEO_JOB, video_key(video_id))


def get_video(services: Services, video_id: str) -> VideoView | None:
    job = _video_job(services, video_id)
    if job is None:
        return None
    status = {
        JobStatus.QUEUED: "queued",
        JobStatus.RUNNING: "processing",
        JobStatus.DONE: "done",
    }.get(job.status, "failed")
    result_url = None
    if status == "done":
        result_url = services.blobs.presigned_get(
            video_key(video_id), expires_in=VIDEO_LINK_DAYS * 86400, filename="atelier-video.mp4"
        )
    result = (job.result or {}) if status == "done" else {}
    progress = 1.0 if status == "done" else job.progress
    described = describe(services, job)
    parts = video_parts(services, video_id) if status in ("queued", "processing") else []
    if parts:
        # Cut into parts: the clip job waits in the queue while workers paint them, so the
        # parts' progress is the clip's (the join is the last few per cent).
        status = "processing"
        painted = sum(1.0 if part.status == JobStatus.DONE else part.progress for part in parts) / len(parts)
        progress = max(progress, 0.95 * painted)
        done = sum(part.status == JobStatus.DONE for part in parts)
        # The parts' own estimates: the slowest running one, or a part's time for each waiting.
        etas = [describe(services, part).eta_seconds for part in parts if part.status != JobStatus.DONE]
        described = replace(
            described, stage="parts", step=min(len(parts), done + 1), total=len(parts), position=None,
            progress=progress, eta_seconds=max((e for e in etas if e is not None), default=None),
        )
    return VideoView(
        id=video_id,
        status=status,
        progress=progress,
        position=services.queue.position(job.id) if status == "queued" else None,
        result_url=result_url,
        error="painting failed" if status == "failed" else None,
        width=result.get("width"),
        height=result.get("height"),
        source_width=result.get("source_width"),
        source_height=result.get("source_height"),
        job=described,
    )


def video_painter(services: Services, style: StyleRef, *, alpha: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Frames (N, 3, H, W) in 0..1 -> painted frames: the engine loaded and the style encoded
    once, so every frame gets the same statistics (re-encoding per frame would add flicker)."""
    loader = services.loader
    if style.filter is not None:
        net = loader.filter(style.filter)
        return lambda frames: net.stylize(frames.to(loader.device), strength=alpha)
    model = loader.style_engine("microast")
    assert style.load is not None
    painting = fit_longest(style.load().convert("RGB"), DEFAULT_STYLE_SIZE)
    encoded = model.encode_style(to_tensor(painting).to(loader.device))

    def painted(frames: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return paint(model, frames.to(loader.device), [encoded], alpha=alpha)

    return painted


@job_handler(VIDEO_JOB)
def stylize_video_job(ctx: JobContext) -> dict[str, Any]:
    """Paint a clip, store it under its key, and mail the link when an address was given.

    A long clip (see :func:`plan_parts`) is cut instead: this job queues its parts
    (:data:`CHUNK_JOB`, painted by any worker), waits for them back in the queue (deferred, no
    attempt used, no worker held), and joins them once every part is painted."""
    from atelier.art.engines import video  # PyAV and OpenCV: only where clips are painted

    payload = ctx.payload
    services = ctx.services
    settings = services.settings
    parts = video_parts(services, payload["video_id"])
    if parts:
        return _join_parts(ctx, parts)
    upload = get_upload(services, payload["upload_id"])
    _, paint = _style_and_painter(ctx)
    key = video_key(payload["video_id"])
    with tempfile.TemporaryDirectory(prefix="atelier-video-") as folder:
        source = Path(folder) / f"source{Path(upload.blob_key).suffix or '.mp4'}"
        source.write_bytes(read_upload(services, upload))
        target = Path(folder) / "painted.mp4"
        try:
            # Never larger than the clip itself: painting cannot add detail the clip lacks.
            info = video.probe(source)
            size = min(int(payload.get("size") or VIDEO_SIZE), max(info.width, info.height))
            plan = plan_parts(info, chunk_seconds=settings.video_chunk_seconds)
            if plan is not None:
                # Refused here, once, rather than by every part.
                video.check_limits(info, limit_seconds=settings.video_max_seconds, limit_frames=settings.video_max_frames,
                                   limit_pixels=settings.video_max_pixels)
                _queue_parts(ctx, plan, size=size)
                raise JobDeferred(f"cut into {len(plan)} parts; waiting for them", delay_seconds=PARTS_POLL_SECONDS)
            report = video.stylize_video(
                source,
                target,
                paint=paint,
                size=size,
                temporal=settings.video_temporal,
                # The flicker figure costs a flow pair per frame and nobody reads it here
                # (atelier render and atelier bench report it).
                measure_flicker=False,
                limit_seconds=settings.video_max_seconds,
                limit_frames=settings.video_max_frames,
                limit_pixels=settings.video_max_pixels,
                progress=ctx.progress_callback(end=0.97),
                device=services.loader.device,
            )
        except video.VideoError as exc:
            raise PermanentJobError(str(exc)) from exc
        ctx.check()
        services.blobs.put(key, target, content_type="video/mp4")
    return _delivered(ctx, report, info)


def _style_and_painter(ctx: JobContext) -> tuple[StyleRef, Callable[[torch.Tensor], torch.Tensor]]:
    payload, services = ctx.payload, ctx.services
    style_upload = get_upload(services, payload["style_upload_id"]) if payload.get("style_upload_id") else None
    if payload.get("style_name"):
        # A catalog style another machine added: wait for it to sync here rather than fail.
        require_style(services, payload["style_name"], since=ctx.job.created_at)
    style = style_ref(services, name=payload.get("style_name"), upload=style_upload)
    return style, video_painter(services, style, alpha=float(payload.get("alpha", 1.0)))


def _delivered(ctx: JobContext, report: VideoReport, info: VideoInfo, **extra: Any) -> dict[str, Any]:
    """The clip is stored: mail its link when an address was given; the job's result."""
    payload, services = ctx.payload, ctx.services
    key = video_key(payload["video_id"])
    if payload.get("email"):
        link = services.blobs.presigned_get(key, expires_in=VIDEO_LINK_DAYS * 86400, filename="atelier-video.mp4")
        with transaction(services.engine) as session:
            services.mailer.queue_mail(
                session,
                to=payload["email"],
                template="video_ready",
                locale=payload.get("locale") or "en",
                dedupe_key=f"video:{payload['video_id']}",
                link=link,
                days=VIDEO_LINK_DAYS,
            )
    return {
        "output_key": key,
        "frames": report.frames,
        "width": report.width,
        "height": report.height,
        "source_width": info.width,
        "source_height": info.height,
        "seconds": round(report.seconds, 2),
        **extra,
    }


# ------------------------------------------------------------------------------------------------
# long clips: parts painted by several workers at once, then joined


#: The job kind of one part of a long clip.
CHUNK_JOB = "video.chunk"
#: Seconds between the waiting clip job's looks at its parts (it holds no worker meanwhile).
PARTS_POLL_SECONDS = 2.0
#: Parts are written nearly losslessly: the join encodes their frames once more.
PART_CRF = 12


def part_key(video_id: str, index: int) -> str:
    return f"videos/{video_id}/part{index:03d}.mp4"


def plan_parts(info: VideoInfo, *, chunk_seconds: float) -> list[tuple[int, int | None]] | None:
    """Where a clip is cut, as (first frame, end frame) per part, the last one open (to the
    clip's end): parts of about ``chunk_seconds`` for a clip longer than 1.5 times that; None
    for one job. Only a clip whose container gives the exact frame count is cut (a part is
    found by its frame numbers), and never a GIF (painted to a GIF at once)."""
    if chunk_seconds <= 0 or info.is_gif or not info.frames_exact or info.duration < 1.5 * chunk_seconds:
        return None
    count = max(2, round(info.duration / chunk_seconds))
    per = -(-info.frames // count)
    starts = [k * per for k in range(count) if k * per < info.frames]
    return [(start, starts[k + 1] if k + 1 < len(starts) else None) for k, start in enumerate(starts)]


def video_parts(services: Services, video_id: str) -> list[JobInfo]:
    """The part jobs of a clip that was cut, in order (empty if it was not)."""
    parts: list[JobInfo] = []
    while (job := services.queue.find(CHUNK_JOB, part_key(video_id, len(parts)))) is not None:
        parts.append(job)
    return parts


def _queue_parts(ctx: JobContext, plan: list[tuple[int, int | None]], *, size: int) -> None:
    payload = ctx.payload
    lead = ctx.services.settings.video_chunk_lead_frames
    with transaction(ctx.services.engine) as session:
        for index, (start, end) in enumerate(plan):
            part = payload | {"part": index, "parts": len(plan), "frames": [start, end], "lead_in": lead, "size": size}
            enqueue(session, CHUNK_JOB, part, priority=priority_of(CHUNK_JOB), max_attempts=3, output_key=part_key(payload["video_id"], index))
    log.info("video %s: cut into %d parts (frames %s)", payload["video_id"], len(plan), [start for start, _ in plan])


def _join_parts(ctx: JobContext, parts: list[JobInfo]) -> dict[str, Any]:
    """Wait for the parts (deferred) or, once all are painted, join them into the clip."""
    from atelier.art.engines import video

    payload, services, settings = ctx.payload, ctx.services, ctx.services.settings
    lost = [job for job in parts if job.status in (JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED)]
    if lost:
        # The clip cannot be joined any more: stop the other parts and drop what they painted.
        for job in parts:
            if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                services.queue.cancel(job.id)
            services.blobs.delete(part_key(payload["video_id"], int(job.payload["part"])))
        raise PermanentJobError(f"part {lost[0].payload.get('part')} of the clip could not be painted: {lost[0].last_error or lost[0].status}")
    done = sum(job.status == JobStatus.DONE for job in parts)
    if done < len(parts):
        raise JobDeferred(f"{done} of {len(parts)} parts painted", delay_seconds=PARTS_POLL_SECONDS)
    upload = get_upload(services, payload["upload_id"])
    key = video_key(payload["video_id"])
    with tempfile.TemporaryDirectory(prefix="atelier-video-") as folder:
        source = Path(folder) / f"source{Path(upload.blob_key).suffix or '.mp4'}"
        source.write_bytes(read_upload(services, upload))
        files = []
        for job in parts:
            files.append(Path(folder) / f"part{len(files):03d}.mp4")
            files[-1].write_bytes(services.blobs.read(part_key(payload["video_id"], len(files) - 1)))
        target = Path(folder) / "painted.mp4"
        try:
            info = video.probe(source)
            report = video.join_video(
                source,
                files,
                target,
                size=parts[0].payload["size"],
                limit_seconds=settings.video_max_seconds,
                limit_frames=settings.video_max_frames,
                limit_pixels=settings.video_max_pixels,
                progress=ctx.progress_callback(start=0.95, end=0.99),
            )
        except video.VideoError as exc:
            raise PermanentJobError(str(exc)) from exc
        ctx.check()
        services.blobs.put(key, target, content_type="video/mp4")
    for index in range(len(parts)):
        services.blobs.delete(part_key(payload["video_id"], index))
    painting = [float((job.result or {}).get("seconds") or 0.0) for job in parts]
    return _delivered(ctx, report, info, parts=len(parts), part_seconds=painting, workers=sorted({str((job.result or {}).get("worker")) for job in parts}))


@job_handler(CHUNK_JOB)
def paint_video_part(ctx: JobContext) -> dict[str, Any]:
    """Paint one part of a long clip (its frames, after a lead-in that carries the temporal
    blending across the join) and store it for the clip job to join."""
    from atelier.art.engines import video

    payload, services, settings = ctx.payload, ctx.services, ctx.services.settings
    clip = _video_job(services, payload["video_id"])
    if clip is None or clip.status in (JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED):
        # The clip was cancelled (or failed): nobody will join this part.
        raise PermanentJobError("the clip this part belongs to is no longer being painted")
    upload = get_upload(services, payload["upload_id"])
    _, paint = _style_and_painter(ctx)
    key = part_key(payload["video_id"], int(payload["part"]))
    start, end = payload["frames"]
    with tempfile.TemporaryDirectory(prefix="atelier-video-part-") as folder:
        source = Path(folder) / f"source{Path(upload.blob_key).suffix or '.mp4'}"
        source.write_bytes(read_upload(services, upload))
        target = Path(folder) / "part.mp4"
        try:
            report = video.stylize_video(
                source,
                target,
                paint=paint,
                size=int(payload["size"]),
                temporal=settings.video_temporal,
                frames=(int(start), None if end is None else int(end)),
                lead_in=int(payload.get("lead_in") or 0),
                audio=False,
                crf=PART_CRF,
                measure_flicker=False,
                limit_seconds=settings.video_max_seconds,
                limit_frames=settings.video_max_frames,
                limit_pixels=settings.video_max_pixels,
                progress=ctx.progress_callback(end=0.98),
                device=services.loader.device,
            )
        except video.VideoError as exc:
            raise PermanentJobError(str(exc)) from exc
        ctx.check()
        services.blobs.put(key, target, content_type="video/mp4")
    return {"output_key": key, "frames": report.frames, "seconds": round(report.seconds, 2), "worker": ctx.job.lease_owner}
