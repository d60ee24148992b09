"""Batches for the instant engines: many photos and one or more styles in one call, every photo
painted in every style (the pairs, photo-major), as Stylify's endpoint took lists of content and
style references.

A small batch (at most ATELIER_BATCH_INLINE_PAIRS pairs) is painted during the request and
answered inline. A bigger one is a queued job (:data:`BATCH_JOB`): a worker paints the pairs
through the same instant service (submitted together, so its micro-batcher paints pairs of one
style and size in one network call), stores each picture under a key fixed by the batch id and
the pair's place, and reports progress pair by pair; ``GET /api/v1/batches/{id}`` lists the
results as they come. The batch id is 128 random bits: the only way to find it.

The photos and paintings are refused (bad image, too big) before anything is queued or painted,
so that a batch either starts whole or not at all.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any


from atelier.art.blocks.images import encode_image
from atelier.service.catalog_sync import require_style
from atelier.service.context import Services
from atelier.service.engines import STYLE_ENGINES
from atelier.service.errors import StyleChoiceError
from atelier.service.refs import StyleRef
from atelier.service.resolve import photo_ref, style_ref
from atelier.service.uploads import UploadInfo, get_upload
from atelier.service.worker import JobContext, job_handler
from atelier.service.lanes import priority_of
from atelier.store.db import JobStatus, transaction
from atelier.store.queue import JobInfo, enqueue

log = logging.getLogger(__name__)

BATCH_JOB = "batch.stylize"
FORMATS = {"jpeg": ("image/jpeg", "jpg"), "png": ("image/png", "png"), "webp": ("image/webp", "webp")}
#: Days a batch's result links work (S3 presigned links last at most 7 days).
RESULT_LINK_DAYS = 7


class BatchError(StyleChoiceError):
    """A batch that cannot be accepted (too many photos or pairs, nothing to paint)."""


@dataclass(frozen=True)
class StyleChoice:
    """One style of a batch: a filter or catalog style by name, or an uploaded painting."""

    name: str | None = None
    upload_id: str | None = None

    @property
    def label(self) -> str:
        return self.name if self.name else f"upload:{self.upload_id}"

    def ref(self, services: Services) -> StyleRef:
        if self.name:
            return style_ref(services, name=self.name)
        return style_ref(services, upload=get_upload(services, self.upload_id or ""))

    def payload(self) -> dict[str, str]:
        return {"name": self.name} if self.name else {"upload_id": self.upload_id or ""}

    @classmethod
    def of(cls, value: dict[str, Any]) -> StyleChoice:
        return cls(name=value.get("name"), upload_id=value.get("upload_id"))


@dataclass(frozen=True)
class BatchOptions:
    """How every pair of a batch is painted (the instant API's own parameters)."""

    engine: str = "microast"
    alpha: float = 1.0
    size: int | None = None
    preserve_color: bool = False
    format: str = "jpeg"

    def payload(self) -> dict[str, Any]:
        return {"engine": self.engine, "alpha": self.alpha, "size": self.size, "preserve_color": self.preserve_color, "format": self.format}


@dataclass(frozen=True)
class Pair:
    index: int
    photo: UploadInfo
    style: StyleChoice


@dataclass(frozen=True)
class PairResult:
    """One painted pair: the picture's bytes (inline) or where it is stored (a job)."""

    index: int
    content_id: str
    style: str
    width: int
    height: int
    data: bytes | None = None
    key: str | None = None


def plan(
    services: Services,
    photos: Sequence[UploadInfo],
    styles: Sequence[StyleChoice],
    options: BatchOptions,
) -> list[Pair]:
    """Every photo in every style, checked against the batch limits and the instant API's own
    (engine, strength, size, styles that exist, uploads that are photos): refused before any
    work is done."""
    settings = services.settings
    if not photos:
        raise BatchError("send at least one photo (content or content_id)")
    if not styles:
        raise BatchError("send at least one style (style_name, style_id or style)")
    if len(photos) > settings.batch_max_photos:
        raise BatchError(f"a batch takes at most {settings.batch_max_photos} photos, got {len(photos)}")
    if len(styles) > settings.batch_max_styles:
        raise BatchError(f"a batch takes at most {settings.batch_max_styles} styles, got {len(styles)}")
    pairs = len(photos) * len(styles)
    if pairs > settings.batch_max_pairs:
        raise BatchError(
            f"{len(photos)} photos x {len(styles)} styles is {pairs} pictures; a batch paints at most {settings.batch_max_pairs}"
        )
    if options.format not in FORMATS:
        raise BatchError(f"format must be one of {', '.join(FORMATS)}")
    if options.engine not in STYLE_ENGINES:
        raise BatchError(f"unknown engine {options.engine!r}; choose one of {', '.join(STYLE_ENGINES)}")
    if not 0.0 <= options.alpha <= 1.0:
        raise BatchError(f"the strength (alpha) must be between 0 and 1, got {options.alpha}")
    for style in styles:
        style.ref(services)  # an unknown name or a missing upload is refused now
    for photo in photos:
        # Not a photo, not confirmed, or too small at this size: refused now.
        services.instant.output_size(photo_ref(services, photo), options.size)
    return [Pair(index=i * len(styles) + j, photo=p, style=s) for i, p in enumerate(photos) for j, s in enumerate(styles)]


def _paint(
    services: Services,
    pairs: Sequence[Pair],
    options: BatchOptions,
    on_result: Callable[[Pair, Any], None],
) -> None:
    """Paint the pairs, several at once so that the instant service batches them; call
    ``on_result(pair, StylizeResult)`` in this thread as each one is done."""
    refs = {pair.style: pair.style.ref(services) for pair in pairs}
    threads = max(1, min(len(pairs), services.instant.batch_max))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="batch") as pool:
        futures: dict[Future[Any], Pair] = {
            pool.submit(
                services.instant.stylize,
                photo_ref(services, pair.photo),
                refs[pair.style],
                engine=options.engine,
                alpha=options.alpha,
                size=options.size,
                preserve_color=options.preserve_color,
            ): pair
            for pair in pairs
        }
        try:
            for future in as_completed(futures):
                on_result(futures[future], future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def paint_inline(services: Services, pairs: Sequence[Pair], options: BatchOptions) -> list[PairResult]:
    """Paint a small batch now; the pictures in pair order."""
    results: list[PairResult] = []

    def keep(pair: Pair, result: Any) -> None:
        image = result.image
        results.append(
            PairResult(
                index=pair.index,
                content_id=pair.photo.id,
                style=pair.style.label,
                width=image.width,
                height=image.height,
                data=encode_image(image, format=options.format, quality=90),
            )
        )

    _paint(services, pairs, options, keep)
    return sorted(results, key=lambda r: r.index)


def result_key(batch_id: str, index: int, fmt: str) -> str:
    return f"batches/{batch_id}/{index:03d}.{FORMATS[fmt][1]}"


def _prefix(batch_id: str) -> str:
    return f"batches/{batch_id}/"


@dataclass(frozen=True)
class BatchView:
    """A queued batch as the API shows it."""

    id: str
    status: str  # queued, processing, done, failed
    progress: float
    position: int | None
    results: list[dict[str, Any]]
    error: str | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "progress": round(self.progress, 4),
            "position": self.position,
            "pairs": len(self.results),
            "done": sum(1 for r in self.results if r["url"]),
            "results": self.results,
            "status_url": f"/api/v1/batches/{self.id}",
            "error": self.error,
        }


def order_batch(services: Services, pairs: Sequence[Pair], options: BatchOptions) -> BatchView:
    """Queue the painting of a planned batch; its id (128 random bits) is the only way to find it."""
    batch_id = secrets.token_hex(16)
    payload = {
        "batch_id": batch_id,
        "pairs": [{"content_id": p.photo.id, "style": p.style.payload()} for p in pairs],
        **options.payload(),
    }
    with transaction(services.engine) as session:
        enqueue(session, BATCH_JOB, payload, priority=priority_of(BATCH_JOB), max_attempts=3, output_key=_prefix(batch_id))
    view = get_batch(services, batch_id)
    assert view is not None
    return view


def _batch_job(services: Services, batch_id: str) -> JobInfo | None:
    if not batch_id or len(batch_id) != 32 or not batch_id.isalnum():
        return None
    return services.queue.find(BATCH_JOB, _prefix(batch_id))


def get_batch(services: Services, batch_id: str) -> BatchView | None:
    job = _batch_job(services, batch_id)
    if job is None:
        return None
    status = {JobStatus.QUEUED: "queued", JobStatus.RUNNING: "processing", JobStatus.DONE: "done"}.get(job.status, "failed")
    fmt = job.payload.get("format", "jpeg")
    # Pairs finish out of order: the job's detail lists the ones stored so far.
    finished = set((job.progress_detail or {}).get("finished", []))
    if status == "done":
        finished = set(range(len(job.payload["pairs"])))
    sizes = {int(k): v for k, v in ((job.result or {}).get("sizes") or {}).items()}
    results = []
    for index, pair in enumerate(job.payload["pairs"]):
        key = result_key(batch_id, index, fmt)
        done = index in finished
        entry: dict[str, Any] = {
            "index": index,
            "content_id": pair["content_id"],
            "style": StyleChoice.of(pair["style"]).label,
            "url": services.blobs.presigned_get(key, expires_in=RESULT_LINK_DAYS * 86400) if done else None,
        }
        if index in sizes:
            entry["width"], entry["height"] = sizes[index]
        results.append(entry)
    return BatchView(
        id=batch_id,
        status=status,
        progress=1.0 if status == "done" else job.progress,
        position=services.queue.position(job.id) if status == "queued" else None,
        results=results,
        error="painting failed" if status == "failed" else None,
    )


@job_handler(BATCH_JOB)
def paint_batch_job(ctx: JobContext) -> dict[str, Any]:
    """Paint every pair of a batch, storing each picture as it is done (a rerun overwrites)."""
    services = ctx.services
    payload = ctx.payload
    batch_id = payload["batch_id"]
    options = BatchOptions(
        engine=payload.get("engine", "microast"),
        alpha=float(payload.get("alpha", 1.0)),
        size=payload.get("size"),
        preserve_color=bool(payload.get("preserve_color")),
        format=payload.get("format", "jpeg"),
    )
    uploads: dict[str, UploadInfo] = {}
    pairs = []
    for index, pair in enumerate(payload["pairs"]):
        content_id = pair["content_id"]
        if content_id not in uploads:
            uploads[content_id] = get_upload(services, content_id)
        pairs.append(Pair(index=index, photo=uploads[content_id], style=StyleChoice.of(pair["style"])))
    for name in sorted({p.style.name for p in pairs if p.style.name}):
        # A catalog style another machine added: wait for it to sync here rather than fail.
        require_style(services, name, since=ctx.job.created_at)
    content_type, _ = FORMATS[options.format]
    finished: list[int] = []
    sizes: dict[str, tuple[int, int]] = {}

    def store(pair: Pair, result: Any) -> None:
        image = result.image
        data = encode_image(image, format=options.format, quality=90)
        services.blobs.put(result_key(batch_id, pair.index, options.format), data, content_type=content_type)
        finished.append(pair.index)
        sizes[str(pair.index)] = (image.width, image.height)
        # force: each stored picture is news for the status page (a few dozen writes at most).
        ctx.progress(
            len(finished) / len(pairs),
            stage="painting",
            detail={"finished": sorted(finished), "pairs": len(pairs)},
            force=True,
        )

    ctx.progress(0.0, stage="painting", detail={"finished": [], "pairs": len(pairs)}, force=True)
    _paint(services, pairs, options, store)
    log.info("batch %s: %d pictures painted", batch_id, len(pairs))
    return {"pairs": len(pairs), "sizes": sizes}
