"""``/api/v1/batches``: many photos and one or more styles in one call (see
:mod:`atelier.service.batches`): answered inline when small, else as a job to follow.

Limits: the body as a whole (ATELIER_BATCH_MAX_BYTES, refused before it is read) and each image
(ATELIER_MAX_UPLOAD_BYTES); the counts of photos, styles and pictures (ATELIER_BATCH_MAX_*);
the per-address rate limits as if each file were an upload and each picture an instant
painting, so a batch is no way around them. Counted before any file is stored or painted.
"""

from __future__ import annotations

import base64
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from atelier.service.batches import FORMATS, BatchOptions, StyleChoice, get_batch, order_batch, paint_inline, plan
from atelier.service.context import Services
from atelier.service.uploads import get_upload, store_upload
from atelier.web.deps import read_file, services_of
from atelier.web.errors import ApiError
from atelier.web.security import client_ip, rate_limit, upload_guard

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["instant"])
ServicesDep = Annotated[Services, Depends(services_of)]


def _sent(file: UploadFile) -> bool:
    # A form's empty file input arrives as a part with no name and no bytes.
    return bool(file.filename) or bool(file.size)


def _check_counts(services: Services, photos: int, styles: int) -> None:
    # The same refusals plan() makes, before the files are read or anything is counted.
    settings = services.settings
    if photos > settings.batch_max_photos:
        raise ApiError(422, "too_many", f"a batch takes at most {settings.batch_max_photos} photos, got {photos}")
    if styles > settings.batch_max_styles:
        raise ApiError(422, "too_many", f"a batch takes at most {settings.batch_max_styles} styles, got {styles}")
    if photos * styles > settings.batch_max_pairs:
        raise ApiError(
            422, "too_many", f"{photos} photos x {styles} styles is {photos * styles} pictures; a batch paints at most {settings.batch_max_pairs}"
        )


async def _count_against_limits(request: Request, services: Services, files: int, pictures: int) -> None:
    settings = services.settings
    ip = client_ip(request)
    # The request itself was counted as one upload by the address-limit middleware.
    for _ in range(max(0, files - 1)):
        await rate_limit(request, "upload", "ip", ip, settings.rate_limit_uploads_per_ip)
    for _ in range(pictures):
        await rate_limit(request, "paint", "ip", ip, settings.rate_limit_paintings_per_ip)


@router.post(
    "/batches",
    dependencies=[Depends(upload_guard)],
    summary="Paint many photos in one or more styles",
    responses={
        200: {"description": "A small batch, painted: every picture inline (base64)."},
        202: {"description": "A bigger batch, queued: follow status_url."},
    },
)
async def create_batch(
    request: Request,
    services: ServicesDep,
    content: Annotated[list[UploadFile] | None, File(description="Photos (repeat the field).")] = None,
    content_id: Annotated[list[str] | None, Form(description="Ids of uploaded photos (repeat the field).")] = None,
    style: Annotated[list[UploadFile] | None, File(description="Your own paintings as styles (repeat).")] = None,
    style_name: Annotated[list[str] | None, Form(description="Filters or catalog styles (repeat).")] = None,
    style_id: Annotated[list[str] | None, Form(description="Ids of uploaded paintings (repeat).")] = None,
    engine: Annotated[Literal["microast", "adain"], Form(description="Engine for paintings (filters have their own).")] = "microast",
    alpha: Annotated[float, Form(ge=0.0, le=1.0, description="Strength: 1 the full style, 0 the photo.")] = 1.0,
    size: Annotated[int | None, Form(ge=8, description="Longest side of each result (capped by the server).")] = None,
    preserve_color: Annotated[bool, Form(description="Keep the photos' colours.")] = False,
    format: Annotated[Literal["jpeg", "png", "webp"], Form(description="jpeg, png or webp.")] = "jpeg",
    respond: Annotated[Literal["auto", "job"], Form(description="auto: inline when small; job: always a job.")] = "auto",
) -> JSONResponse:
    """Every photo painted in every style (photo-major order: all styles of the first photo,
    then of the second, ...). At most ATELIER_BATCH_INLINE_PAIRS pictures come back in this
    answer (200, each as base64); more are a queued job (202) whose ``status_url`` lists the
    pictures' links as they are painted."""
    files = [f for f in content or [] if _sent(f)]
    paintings = [f for f in style or [] if _sent(f)]
    ids = [c for c in content_id or [] if c]
    names = [n for n in style_name or [] if n]
    style_ids = [s for s in style_id or [] if s]
    photos_count = len(files) + len(ids)
    styles_count = len(paintings) + len(names) + len(style_ids)
    if not photos_count:
        raise ApiError(422, "invalid_request", "send at least one photo (content or content_id)")
    if not styles_count:
        raise ApiError(422, "invalid_request", "send at least one style (style_name, style_id or style)")
    _check_counts(services, photos_count, styles_count)
    await _count_against_limits(request, services, len(files) + len(paintings), photos_count * styles_count)
    options = BatchOptions(engine=engine, alpha=alpha, size=size, preserve_color=preserve_color, format=format)

    def prepare() -> list[Any]:
        limit = services.settings.max_upload_bytes
        for name in names:
            StyleChoice(name=name).ref(services)  # an unknown name is refused before a file is kept
        photos = [store_upload(services, read_file(f, limit, what="photo"), kind="content", temporary=True)[0] for f in files]
        photos += [get_upload(services, c) for c in ids]
        styles = [StyleChoice(name=n) for n in names]
        for painting in paintings:
            info, _ = store_upload(services, read_file(painting, limit, what="painting"), kind="style", temporary=True)
            styles.append(StyleChoice(upload_id=info.id))
        styles += [StyleChoice(upload_id=s) for s in style_ids]
        return plan(services, photos, styles, options)

    pairs = await run_in_threadpool(prepare)
    inline = respond == "auto" and len(pairs) <= services.settings.batch_inline_pairs
    if inline:
        results = await run_in_threadpool(paint_inline, services, pairs, options)
        media_type = FORMATS[format][0]
        body = {
            "id": None,
            "status": "done",
            "pairs": len(results),
            "results": [
                {
                    "index": r.index,
                    "content_id": r.content_id,
                    "style": r.style,
                    "width": r.width,
                    "height": r.height,
                    "content_type": media_type,
                    "image_base64": base64.b64encode(r.data or b"").decode("ascii"),
                }
                for r in results
            ],
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})
    view = await run_in_threadpool(order_batch, services, pairs, options)
    return JSONResponse(view.public(), status_code=202, headers={"Location": f"/api/v1/batches/{view.id}"})


@router.get("/batches/{batch_id}", summary="A queued batch: progress and its pictures so far")
def batch_status(services: ServicesDep, batch_id: str) -> dict[str, Any]:
    view = get_batch(services, batch_id)
    if view is None:
        raise ApiError(404, "not_found", "no such batch")
    return view.public()
