"""The commission JSON API: order an artwork, follow it (status, server-sent events), and the
pictures its owner may see (the latest intermediate one, the watermarked preview)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool

from atelier.service.artworks import (
    ArtworkStatus,
    artwork_by_preview_token,
    get_artwork,
    order_artwork,
    progress_image,
    read_preview,
)
from atelier.service.context import Services
from atelier.web.deps import read_file, services_of, wants_locale
from atelier.web.errors import ApiError
from atelier.web.security import commission_guard

log = logging.getLogger(__name__)

router = APIRouter(tags=["commissions"])
ServicesDep = Annotated[Services, Depends(services_of)]

#: Seconds between two looks at an artwork for its event stream.
EVENT_POLL = 1.0
#: Seconds between keep-alive comments on a quiet stream (proxies close idle connections).
KEEPALIVE = 15.0


class JobOut(BaseModel):
    kind: str = Field(description="The job kind (artwork.preview, artwork.hd).")
    phase: str = Field(description="preview or hd: which of the commission's two paintings.")
    status: str = Field(description="queued, running, done, failed, dead or cancelled.")
    progress: float = Field(description="This job's own fraction, 0..1; never goes down.")
    stage: str | None
    stage_text: str | None
    pass_: int | None = Field(default=None, alias="pass")
    passes: int | None
    eta_seconds: float | None
    position: int | None


class ArtworkOut(BaseModel):
    id: str = Field(description="The artwork's id (random; keep it to follow the painting).")
    status: str = Field(description="queued, painting, preview_ready or failed; after a sale paid, hd_painting, delivered.")
    style: str
    style_title: str
    progress: float = Field(description="0..1 for the whole commission, the preview (its first fifth) then the HD picture; never goes down.")
    stage: str | None = Field(description="What the current job does: queued, starting, pass 2/3, upscale, paused, done...")
    stage_text: str | None = Field(default=None, description="The stage in words, in the reader's language (\"Painting, 2 of 3 passes\").")
    pass_: int | None = Field(default=None, alias="pass", description="The pass being painted (from 1).")
    passes: int | None = Field(default=None, description="How many passes the painting has.")
    eta_seconds: float | None = Field(default=None, description="Seconds until the current job is done (waiting included), an estimate that improves as it paints.")
    position: int | None = Field(description="Place in the queue while queued (1 = next).")
    job: JobOut | None = Field(default=None, description="The job the commission is at: the preview's, then the HD picture's once paid for.")
    preview_url: str | None = Field(default=None, description="The watermarked preview picture, once it exists.")
    progress_image_url: str | None = Field(description="The latest intermediate picture of the current job, while painting.")
    status_url: str
    events_url: str = Field(description="Server-sent events with the same fields as they change.")
    page_url: str
    created_at: str
    preview_ready_at: str | None
    preview_page_url: str | None = Field(default=None, description="The preview's page (the mailed link), once the preview exists.")
    error: str | None


@router.post("/api/v1/artworks", dependencies=[Depends(commission_guard)], status_code=201, response_model=ArtworkOut, summary="Order a commission")
def create_artwork(
    services: ServicesDep,
    request: Request,
    style_name: Annotated[str, Form(description="A hand-picked style (GET /api/v1/styles, commission=true).")],
    email: Annotated[str, Form(description="Where the link to the preview is sent.")],
    content: Annotated[UploadFile | None, File(description="The photo (or give content_id).")] = None,
    content_id: Annotated[str | None, Form(description="The id of an uploaded photo.")] = None,
    locale: Annotated[str | None, Form(description="en or es: the language of the mails.")] = None,
) -> dict[str, object]:
    """The photo and its painting job are recorded together; a worker paints it and mails the
    owner a link to the watermarked preview."""
    data = read_file(content, services.settings.max_upload_bytes, what="photo") if content is not None else None
    lang = wants_locale(request, locale)
    view = order_artwork(services, style_name=style_name, email=email, locale=lang, content=data, content_id=content_id or None)
    return view.public(services)


def _view_or_404(services: Services, artwork_id: str):  # type: ignore[no-untyped-def]
    view = get_artwork(services, artwork_id)
    if view is None:
        raise ApiError(404, "not_found", "no such artwork")
    return view


@router.get("/api/v1/artworks/{artwork_id}", response_model=ArtworkOut, summary="A commission's status")
def artwork_status(services: ServicesDep, artwork_id: str) -> dict[str, object]:
    return _view_or_404(services, artwork_id).public(services)


@router.get("/api/v1/artworks/{artwork_id}/events", summary="A commission's progress as server-sent events")
async def artwork_events(services: ServicesDep, request: Request, artwork_id: str) -> StreamingResponse:
    """``event: progress`` with the status fields whenever they change; ``event: done`` when the
    preview is ready or the painting failed, then the stream ends."""
    first = await run_in_threadpool(_view_or_404, services, artwork_id)
    locale = wants_locale(request)

    async def stream() -> AsyncIterator[str]:
        yield "retry: 3000\n\n"
        last: str | None = None
        quiet_since = time.monotonic()
        view = first
        while True:
            body = json.dumps(view.public(services, locale=locale), separators=(",", ":"))
            if body != last:
                final = view.status in ArtworkStatus.FINAL
                yield f"event: {'done' if final else 'progress'}\ndata: {body}\n\n"
                last = body
                quiet_since = time.monotonic()
                if final:
                    return
            elif time.monotonic() - quiet_since > KEEPALIVE:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(EVENT_POLL)
            if await request.is_disconnected():
                return
            try:
                refreshed = await run_in_threadpool(get_artwork, services, artwork_id)
            except (OperationalError, InterfaceError):
                # The database is away (a restart): keep the stream open and ask again at the
                # next tick. Ending it would send the browser back to this URL, which answers
                # 503 meanwhile -- and EventSource gives up for good on an error status.
                continue
            if refreshed is None:
                return
            view = refreshed

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/api/v1/artworks/{artwork_id}/progress.jpg", response_class=Response, summary="The latest intermediate picture")
def artwork_progress_image(services: ServicesDep, artwork_id: str, job: str = "preview") -> Response:
    """``job=hd``: the HD picture's (watermarked like the preview's) rather than the preview's."""
    data = progress_image(services, artwork_id, phase="hd" if job == "hd" else "preview")
    if data is None:
        raise ApiError(404, "not_found", "no picture yet")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/a/{token}/preview.jpg", response_class=Response, include_in_schema=False)
def preview_image(services: ServicesDep, token: str) -> Response:
    """The watermarked preview behind a mailed link."""
    info = artwork_by_preview_token(services, token)
    data = read_preview(services, info) if info is not None else None
    if data is None:
        raise ApiError(404, "not_found", "no such artwork")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600", "Referrer-Policy": "no-referrer"})
