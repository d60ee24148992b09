"""``GET /api/v1/sheet``: every style on one photo, small, painted in one batch
(:func:`atelier.service.sheet.paint_sheet`) -- the composed, labelled sheet as an image, or the
tiles as JSON for the instant page to choose from."""

from __future__ import annotations

import base64
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from atelier.art.blocks.images import encode_image
from atelier.service.context import Services
from atelier.service.uploads import UploadError, get_upload, load_image
from atelier.web.deps import services_of, wants_locale

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["instant"])
ServicesDep = Annotated[Services, Depends(services_of)]
#: The page's tiles: small JPEGs, inline (one answer, no second request per tile).
TILE_QUALITY = 85


class SheetTileOut(BaseModel):
    name: str = Field(description="The style's name (style_name for /api/v1/stylize); 'photo' for the photo itself.")
    title: str
    kind: Literal["photo", "filter", "painting"]
    artist: str | None
    image: str = Field(description="The tile as a data: URL (JPEG).")


class SheetMissingOut(BaseModel):
    name: str
    title: str
    reason: str


class SheetOut(BaseModel):
    width: int = Field(description="Width of every tile, in pixels.")
    height: int
    seconds: float = Field(description="Time painting the tiles.")
    batch: int = Field(description="How many catalog paintings were painted in one decoder call.")
    tiles: list[SheetTileOut]
    missing: list[SheetMissingOut] = Field(description="Styles that cannot be painted on this server, and why.")


@router.get(
    "/sheet",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "application/json": {"schema": SheetOut.model_json_schema()}}}},
    summary="Every style on one photo",
)
def sheet(
    services: ServicesDep,
    request: Request,
    content_id: Annotated[str, Query(description="The id of an uploaded photo.")],
    size: Annotated[int, Query(ge=64, le=512, description="Longest side of each tile.")] = 256,
    locale: Annotated[str | None, Query(description="en or es: the language of the titles.")] = None,
    format: Annotated[Literal["jpeg", "png", "json"], Query(description="The labelled sheet as an image, or the tiles as JSON.")] = "jpeg",
) -> Response:
    """The photo painted small with every filter and every installed catalog style (the
    paintings in one batch), to choose a style from. ``json`` gives each tile with its style's
    name, ready to paint at full size with /api/v1/stylize."""
    from atelier.service.i18n import gettext
    from atelier.service.sheet import paint_sheet, sheet_styles

    lang = wants_locale(request, locale)
    upload = get_upload(services, content_id)
    if upload.kind not in ("content", "style") or not upload.sha256:
        raise UploadError("this upload is not a photo")
    photo = load_image(services, upload)
    made = paint_sheet(
        services.loader,
        photo,
        styles=sheet_styles(services.catalog, locale=lang),
        size=size,
        style_cache=services.instant.styles,
        style_size=services.instant.style_size,
        photo_title=gettext(lang, "Your photo"),
    )
    headers = {"Cache-Control": "no-store", "X-Sheet-Seconds": f"{made.seconds:.3f}", "X-Batch-Size": str(made.batch)}
    if format != "json":
        media = "image/png" if format == "png" else "image/jpeg"
        return Response(encode_image(made.image, format=format.upper(), quality=90), media_type=media, headers=headers)
    body = SheetOut(
        width=made.size[0],
        height=made.size[1],
        seconds=round(made.seconds, 3),
        batch=made.batch,
        tiles=[
            SheetTileOut(
                name=tile.name,
                title=tile.title,
                kind=tile.kind,
                artist=tile.artist,
                image="data:image/jpeg;base64," + base64.b64encode(encode_image(tile.image, format="JPEG", quality=TILE_QUALITY)).decode(),
            )
            for tile in made.tiles
        ],
        missing=[SheetMissingOut(name=m.name, title=m.title, reason=m.reason) for m in made.missing],
    )
    return JSONResponse(body.model_dump(), headers=headers)
