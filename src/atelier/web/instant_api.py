"""The instant JSON API: uploads (through the app or presigned), stylize, styles."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from atelier.art.blocks.images import encode_image
from atelier.service.context import Services
from atelier.service.instant import StylizeResult
from atelier.service.refs import StyleRef
from atelier.service.resolve import photo_ref, style_ref
from atelier.service.uploads import (
    KINDS,
    confirm_upload,
    get_upload,
    load_image,
    presign_upload,
    store_upload,
)
from atelier.web.deps import read_file, services_of, wants_locale
from atelier.web.errors import ApiError
from atelier.web.security import upload_guard

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["instant"])

ServicesDep = Annotated[Services, Depends(services_of)]
ImageFormat = Literal["jpeg", "png", "webp"]
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class UploadOut(BaseModel):
    id: str = Field(description="Refer to the file by this id (content_id, style_id).")
    kind: str
    content_type: str
    size: int
    width: int | None = None
    height: int | None = None


class PresignIn(BaseModel):
    content_type: str = Field(description="The file's type, e.g. image/jpeg or video/mp4.")
    kind: Literal["content", "style", "video"] = "content"


class PresignOut(BaseModel):
    id: str
    url: str = Field(description="POST the form here: every field of `fields`, then the file as `file`.")
    fields: dict[str, str]
    max_bytes: int
    expires_at: str
    confirm_url: str = Field(description="POST here once the upload is done.")


@router.post("/uploads", dependencies=[Depends(upload_guard)], status_code=201, response_model=UploadOut, summary="Keep a photo, painting or clip")
def upload(
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="The photo (or painting, or clip).")],
    kind: Annotated[Literal["content", "style", "video"], Form()] = "content",
) -> dict[str, object]:
    """Keep a file so that styles can be re-picked without sending it again."""
    limit = services.settings.max_video_bytes if kind == "video" else services.settings.max_upload_bytes
    data = read_file(file, limit, what="video" if kind == "video" else "image")
    info, _ = store_upload(services, data, kind=kind, temporary=True)
    return info.public()


@router.post("/uploads/presign", dependencies=[Depends(upload_guard)], status_code=201, response_model=PresignOut, summary="Upload straight to storage")
def presign(services: ServicesDep, body: PresignIn) -> dict[str, object]:
    """A presigned POST for a direct browser upload to the blob store (S3, or this app's own
    /blobs for local storage); confirm it afterwards."""
    if body.kind not in KINDS:
        raise ApiError(422, "invalid_request", f"kind must be one of {', '.join(KINDS)}")
    return presign_upload(services, content_type=body.content_type, kind=body.kind).public()


@router.post("/uploads/{upload_id}/confirm", response_model=UploadOut, summary="Check a direct upload")
def confirm(services: ServicesDep, upload_id: str) -> dict[str, object]:
    """Check the file a browser uploaded with a presigned POST, as if it had come through the app."""
    return confirm_upload(services, upload_id).public()


@router.get("/uploads/{upload_id}/image", response_class=Response, summary="An uploaded photo, as the painter sees it")
def upload_image(services: ServicesDep, upload_id: str) -> Response:
    """The photo (or painting) of an upload, scaled to the instant API's largest size: the
    "before" of the before/after slider."""
    from atelier.art.blocks.images import fit_longest

    info = get_upload(services, upload_id)
    if info.kind == "video" or not info.sha256:
        raise ApiError(404, "not_found", "no picture for this upload")
    image = load_image(services, info)
    if max(image.size) > services.settings.instant_max_size:
        image = fit_longest(image, services.settings.instant_max_size)
    return Response(encode_image(image, format="JPEG", quality=90), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def _stylize(
    services: Services,
    *,
    content: bytes | None,
    content_id: str | None,
    style: bytes | None,
    style_name: str | None,
    style_id: str | None,
    engine: str,
    alpha: float,
    size: int | None,
    preserve_color: bool,
    fmt: str,
    blend_name: str | None = None,
    blend_id: str | None = None,
    blend: float = 0.5,
) -> Response:
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    if (content is None) == (content_id is None):
        raise ApiError(422, "invalid_request", "send either the photo (content) or the id of an upload (content_id)")
    if sum(x is not None for x in (style, style_name, style_id)) != 1:
        raise ApiError(422, "invalid_request", "send exactly one of style (a painting), style_name or style_id")
    if content is not None:
        upload_info, image = store_upload(services, content, kind="content", temporary=True)
        headers["X-Content-Id"] = upload_info.id
    else:
        assert content_id is not None
        upload_info, image = get_upload(services, content_id), None
    photo = photo_ref(services, upload_info, image)
    if style is not None:
        style_upload, style_image = store_upload(services, style, kind="style", temporary=True)
        headers["X-Style-Id"] = style_upload.id
        chosen = style_ref(services, upload=style_upload, image=style_image)
    elif style_id is not None:
        chosen = style_ref(services, upload=get_upload(services, style_id))
    else:
        chosen = style_ref(services, name=style_name)
    if blend_name is not None and blend_id is not None:
        raise ApiError(422, "invalid_request", "send at most one of blend_name and blend_id")
    if blend_name is not None or blend_id is not None:
        second = style_ref(services, name=blend_name) if blend_name is not None else style_ref(services, upload=get_upload(services, blend_id or ""))
        chosen = StyleRef.blended(chosen, second, blend)
    result: StylizeResult = services.instant.stylize(
        photo, chosen, engine=engine, alpha=alpha, size=size, preserve_color=preserve_color
    )
    data = encode_image(result.image, format=fmt, quality=90)
    headers.update(
        {
            "X-Stylize-Ms": f"{result.seconds * 1000:.1f}",
            "X-Batch-Size": str(result.batch_size),
            "X-Content-Cached": "1" if result.content_cached else "0",
            "X-Result-Cached": "1" if result.result_cached else "0",
            "X-Image-Size": f"{result.image.width}x{result.image.height}",
        }
    )
    return Response(data, media_type=MEDIA_TYPES[fmt], headers=headers)


_IMAGE_RESPONSE = {200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}, "description": "The painted picture."}}


@router.post("/stylize", dependencies=[Depends(upload_guard)], response_class=Response, responses=_IMAGE_RESPONSE, summary="Paint a photo in a style")
def stylize(
    services: ServicesDep,
    content: Annotated[UploadFile | None, File(description="The photo (or give content_id).")] = None,
    content_id: Annotated[str | None, Form(description="The id of an uploaded photo.")] = None,
    style: Annotated[UploadFile | None, File(description="Your own painting as the style.")] = None,
    style_name: Annotated[str | None, Form(description="A filter or catalog style (GET /api/v1/styles).")] = None,
    style_id: Annotated[str | None, Form(description="The id of an uploaded painting.")] = None,
    engine: Annotated[Literal["microast", "adain"], Form(description="Engine for paintings (filters have their own).")] = "microast",
    alpha: Annotated[float, Form(ge=0.0, le=1.0, description="Strength: 1 the full style, 0 the photo.")] = 1.0,
    size: Annotated[int | None, Form(ge=8, description="Longest side of the result (capped by the server).")] = None,
    preserve_color: Annotated[bool, Form(description="Keep the photo's colours.")] = False,
    format: Annotated[ImageFormat, Form(description="jpeg, png or webp.")] = "jpeg",
    blend_name: Annotated[str | None, Form(description="A second painting (catalog style) to blend with the first.")] = None,
    blend_id: Annotated[str | None, Form(description="The id of an uploaded painting to blend with the first.")] = None,
    blend: Annotated[float, Form(ge=0.0, le=1.0, description="The second painting's share of the blend.")] = 0.5,
) -> Response:
    """The photo painted in the style, as image bytes. The answer's ``X-Content-Id`` header names
    the stored photo: pass it as ``content_id`` to re-pick a style without sending it again."""
    limit = services.settings.max_upload_bytes
    return _stylize(
        services,
        content=read_file(content, limit, what="photo") if content is not None else None,
        content_id=content_id or None,
        style=read_file(style, limit, what="painting") if style is not None else None,
        style_name=style_name or None,
        style_id=style_id or None,
        engine=engine,
        alpha=alpha,
        size=size,
        preserve_color=preserve_color,
        fmt=format,
        blend_name=blend_name or None,
        blend_id=blend_id or None,
        blend=blend,
    )


@router.get("/stylize", response_class=Response, responses=_IMAGE_RESPONSE, summary="Paint an uploaded photo")
def stylize_get(
    services: ServicesDep,
    content_id: Annotated[str, Query(description="The id of an uploaded photo.")],
    style_name: Annotated[str | None, Query()] = None,
    style_id: Annotated[str | None, Query()] = None,
    engine: Annotated[Literal["microast", "adain"], Query()] = "microast",
    alpha: Annotated[float, Query(ge=0.0, le=1.0)] = 1.0,
    size: Annotated[int | None, Query(ge=8)] = None,
    preserve_color: Annotated[bool, Query()] = False,
    format: Annotated[ImageFormat, Query()] = "jpeg",
    blend_name: Annotated[str | None, Query(description="A second painting to blend with the first.")] = None,
    blend_id: Annotated[str | None, Query(description="The id of an uploaded painting to blend with the first.")] = None,
    blend: Annotated[float, Query(ge=0.0, le=1.0, description="The second painting's share of the blend.")] = 0.5,
) -> Response:
    """The same as POST, for an uploaded photo, as a link (an ``<img src>`` works without script)."""
    return _stylize(
        services,
        content=None,
        content_id=content_id,
        style=None,
        style_name=style_name or None,
        style_id=style_id or None,
        engine=engine,
        alpha=alpha,
        size=size,
        preserve_color=preserve_color,
        fmt=format,
        blend_name=blend_name or None,
        blend_id=blend_id or None,
        blend=blend,
    )


class StyleOut(BaseModel):
    name: str
    kind: Literal["filter", "painting"]
    title: str
    artist: str | None
    thumbnail_url: str
    commission: bool = Field(description="Can be ordered as a commission.")


class StylesOut(BaseModel):
    locale: str
    styles: list[StyleOut]


@router.get("/styles", response_model=StylesOut, summary="The styles to pick from")
def styles(services: ServicesDep, request: Request, locale: str | None = None) -> dict[str, object]:
    """Filters and catalog styles, with names in the request's language (``locale`` or
    Accept-Language) and thumbnail links."""
    lang = wants_locale(request, locale)
    return {
        "locale": lang,
        "styles": [
            {
                "name": entry.name,
                "kind": entry.kind,
                "title": entry.title(lang),
                "artist": entry.artist,
                "thumbnail_url": f"/api/v1/styles/{entry.name}/thumbnail.jpg",
                "commission": entry.commission,
            }
            for entry in services.catalog.entries()
        ],
    }


@router.get("/styles/{name}/thumbnail.jpg", response_class=Response, summary="A style's thumbnail")
async def thumbnail(services: ServicesDep, name: str) -> Response:
    if services.catalog.get(name) is None:
        raise ApiError(404, "not_found", f"unknown style {name!r}")

    def paint(scene, filter_name):  # type: ignore[no-untyped-def]
        from atelier.art.blocks.images import to_pil, to_tensor

        net = services.loader.filter(filter_name)
        return to_pil(net.stylize(to_tensor(scene).to(services.loader.device)))

    data = await run_in_threadpool(services.catalog.thumbnail, name, paint_filter=paint)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})



class VideoOut(BaseModel):
    id: str = Field(description="The video's id (random; keep it to follow the job).")
    status: str = Field(description="queued, processing, done or failed.")
    progress: float = Field(description="0..1; never goes down.")
    stage: str | None = Field(default=None, description="queued, frames, parts, done...")
    stage_text: str | None = Field(default=None, description="The stage in words, in the reader's language.")
    eta_seconds: float | None = Field(default=None, description="Seconds until done (waiting included): an estimate that improves as it paints.")
    position: int | None = Field(description="Place in the queue while queued.")
    result_url: str | None = Field(description="A link to the painted clip (MP4), once done.")
    status_url: str
    error: str | None
    width: int | None = Field(default=None, description="The painted clip's width, once done.")
    height: int | None = None
    source_width: int | None = Field(default=None, description="The clip's own width, once done.")
    source_height: int | None = None


@router.post("/videos", dependencies=[Depends(upload_guard)], status_code=202, response_model=VideoOut, summary="Paint a video (a queued job)")
def create_video(
    services: ServicesDep,
    request: Request,
    content: Annotated[UploadFile | None, File(description="The clip (MP4, MOV, WebM or GIF), or give content_id.")] = None,
    content_id: Annotated[str | None, Form(description="The id of an uploaded clip (kind=video).")] = None,
    style_name: Annotated[str | None, Form(description="A filter or catalog style.")] = None,
    style_id: Annotated[str | None, Form(description="The id of an uploaded painting.")] = None,
    alpha: Annotated[float, Form(ge=0.0, le=1.0)] = 1.0,
    size: Annotated[int | None, Form(ge=16, description="Longest side of the painted clip (capped by the server).")] = None,
    email: Annotated[str | None, Form(description="Mail a link when the clip is ready.")] = None,
    locale: Annotated[str | None, Form(description="en or es: the language of the mail.")] = None,
) -> dict[str, object]:
    """A clip takes longer than a request should: this answers at once with a job to follow;
    ``status_url`` gives its progress and, once done, a link to the painted clip."""
    from atelier.service.videos import order_video

    if (content is None) == (content_id is None):
        raise ApiError(422, "invalid_request", "send either the clip (content) or the id of an upload (content_id)")
    if (style_name is None) == (style_id is None):
        raise ApiError(422, "invalid_request", "send exactly one of style_name or style_id")
    if content is not None:
        upload_info, _ = store_upload(services, read_file(content, services.settings.max_video_bytes, what="video"), kind="video", temporary=True)
    else:
        assert content_id is not None
        upload_info = get_upload(services, content_id)
    style_upload = get_upload(services, style_id) if style_id else None
    view = order_video(
        services,
        upload=upload_info,
        style_name=style_name,
        style_upload=style_upload,
        alpha=alpha,
        size=size,
        email=email or None,
        locale=wants_locale(request, locale),
    )
    return view.public()


@router.get("/videos/{video_id}", response_model=VideoOut, summary="A video job's status")
def video_status(services: ServicesDep, request: Request, video_id: str) -> dict[str, object]:
    from atelier.service.videos import get_video

    view = get_video(services, video_id)
    if view is None:
        raise ApiError(404, "not_found", "no such video")
    return view.public(wants_locale(request))
