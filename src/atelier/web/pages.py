"""The HTML pages, in English and Spanish: the instant journey (home), the commission form, an
artwork's status page and the preview page behind the mailed link.

Every form works without JavaScript (a POST, then a redirect to a page that shows the result);
the scripts in ``static/js`` make the same pages quicker: uploads and repaints without reloads,
drag and drop, the before/after slider, live progress.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from atelier.art.errors import ImageError, ModelMissingError
from atelier.art.blocks.images import FileTooLargeError, ImageTooLargeError
from atelier.service import i18n
from atelier.service.errors import REFUSALS
from atelier.service.artworks import ArtworkStatus, OrderError, artwork_by_preview_token, get_artwork, order_artwork
from atelier.service.catalog import StyleEntry
from atelier.service.context import Services
from atelier.service.decoding import DecodeBusyError
from atelier.service.instant import UnknownStyleError
from atelier.service.uploads import UploadError, UploadNotFoundError, get_upload, sniff_video, store_upload
from atelier.web.deps import services_of
from atelier.web.errors import ApiError
from atelier.web.security import commission_guard, upload_guard
from atelier.web.templating import render

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
ServicesDep = Annotated[Services, Depends(services_of)]
LOCALE_PATTERN = "^(" + "|".join(i18n.LOCALES) + ")$"


class PageNotFound(Exception):
    """A page path with no page (an unknown language, artwork or token)."""


def page_locale(lang: str) -> str:
    """``lang`` when it is a page language; :class:`PageNotFound` (the localised 404) if not."""
    if lang not in i18n.LOCALES:
        raise PageNotFound(lang)
    return lang


def install(app: FastAPI) -> None:
    """Answer unknown pages with the localised "nothing here" page (English for an unknown
    language)."""

    @app.exception_handler(PageNotFound)
    async def _not_found(request: Request, exc: PageNotFound) -> Response:
        return not_found(request, i18n.DEFAULT_LOCALE)


@router.get("/")
def root(request: Request) -> RedirectResponse:
    """303 to the page in the visitor's language (Accept-Language, q-values honoured)."""
    locale = i18n.negotiate(request.headers.get("accept-language"))
    return RedirectResponse(f"/{locale}/", status_code=303, headers={"Vary": "Accept-Language"})


#: Pages a visitor may type without the language in front (``/commission``): a redirect to the
#: page in their language, never to a 404.
UNPREFIXED_PAGES = ("commission",)


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """Browsers ask for /favicon.ico on their own: the SVG icon the pages name (every browser
    that asks for this path reads SVG icons too)."""
    from atelier.web.templating import STATIC_DIR

    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/{name}")
def one_segment(request: Request, name: str) -> Response:
    """``/en`` (no slash) to ``/en/``, ``/commission`` to the page in the visitor's language,
    anything else the 404 page itself (the router's own slash redirect would lead to
    ``/name/``, which is a 404: a redirect to nowhere)."""
    if name in i18n.LOCALES:
        return RedirectResponse(f"/{name}/", status_code=308)
    locale = i18n.negotiate(request.headers.get("accept-language"))
    if name in UNPREFIXED_PAGES:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"/{locale}/{name}{query}", status_code=303, headers={"Vary": "Accept-Language"})
    return not_found(request, locale)


def friendly_error(locale: str, exc: Exception) -> str:
    """A message for the page, in its language (the API's messages are English)."""
    _ = i18n.translations(locale).gettext
    if isinstance(exc, (FileTooLargeError, ImageTooLargeError)):
        return _("This picture is too big. Try a smaller one (a photo from a phone is fine).")
    if isinstance(exc, ImageError):
        return _("We could not read this picture. Try a JPEG, PNG or WebP photo.")
    if isinstance(exc, UploadNotFoundError):
        return _("That photo is no longer here. Please choose it again.")
    if isinstance(exc, ModelMissingError):
        return _("This style is not available on this server right now.")
    if isinstance(exc, UnknownStyleError):
        return _("Please choose one of the styles.")
    if isinstance(exc, OrderError):
        message = str(exc)
        if "email" in message:
            return _("That email address does not look right. Please check it.")
        if "style" in message:
            return _("Please choose one of the hand-picked styles.")
        return _("Please choose a photo.")
    if isinstance(exc, (UploadError, *REFUSALS, ApiError)):
        return _("Something about this request is not right. Please try again.")
    return _("Something went wrong on our side. Please try again in a moment.")


def _style_cards(entries: list[StyleEntry], locale: str) -> list[dict[str, Any]]:
    return [
        {
            "name": e.name,
            "kind": e.kind,
            "title": e.title(locale),
            "artist": e.artist,
            "thumbnail": f"/api/v1/styles/{e.name}/thumbnail.jpg",
        }
        for e in entries
    ]


def _strength(value: str | int | None) -> int:
    try:
        return max(0, min(100, int(value))) if value is not None else 100
    except (TypeError, ValueError):
        return 100


def _home_context(services: Services, locale: str, params: dict[str, str]) -> dict[str, Any]:
    catalog = services.catalog
    photo_id = params.get("photo") or ""
    style = params.get("style") or ""
    own_id = params.get("own") or ""
    strength = _strength(params.get("strength"))
    result = None
    if photo_id and (style and style != "own" or own_id):
        query: dict[str, Any] = {"content_id": photo_id, "alpha": f"{strength / 100:.2f}"}
        if style == "own" or (own_id and not style):
            query["style_id"] = own_id
        else:
            query["style_name"] = style
        result = {
            "url": "/api/v1/stylize?" + urlencode(query),
            "photo_url": f"/api/v1/uploads/{photo_id}/image",
            "style": style,
        }
    return {
        "filters": _style_cards(catalog.filters(), locale),
        "paintings": _style_cards(catalog.paintings(), locale),
        "selected_style": style or "candy",
        "photo_id": photo_id,
        "own_id": own_id,
        "strength": strength,
        "result": result,
        "can_commission": bool(catalog.commissionable()),
    }


@router.get("/{lang}/")
def home(services: ServicesDep, request: Request, lang: str) -> Response:
    """The instant journey: a photo, a style, the painted picture."""
    locale = page_locale(lang)
    params = dict(request.query_params)
    if params.get("photo"):
        try:
            get_upload(services, params["photo"])
        except UploadNotFoundError as exc:
            return render(request, "home.html", locale, active="instant", error=friendly_error(locale, exc), **_home_context(services, locale, {}))
    return render(request, "home.html", locale, active="instant", error=None, **_home_context(services, locale, params))


@router.post("/{lang}/instant", dependencies=[Depends(upload_guard)])
def instant_form(
    services: ServicesDep,
    request: Request,
    lang: str,
    photo: Annotated[UploadFile | None, File()] = None,
    content_id: Annotated[str, Form()] = "",
    style: Annotated[str, Form()] = "",
    painting: Annotated[UploadFile | None, File()] = None,
    own_id: Annotated[str, Form()] = "",
    strength: Annotated[str, Form()] = "100",
) -> Response:
    """The home form without JavaScript: keep the files, then show the result page."""
    locale = page_locale(lang)
    limit = services.settings.max_upload_bytes
    try:
        photo_data = photo.file.read(max(limit, services.settings.max_video_bytes) + 1) if photo is not None else b""
        if photo_data and sniff_video(photo_data) and not photo_data.startswith(b"GIF8"):
            return _order_video_page(services, locale, photo_data, style=style, strength=strength, painting=painting, own_id=own_id)
        if photo_data:
            if len(photo_data) > limit:
                raise FileTooLargeError("too big")
            content_id = store_upload(services, photo_data, kind="content")[0].id
        elif content_id:
            get_upload(services, content_id)
        else:
            raise OrderError("no photo")
        painting_data = painting.file.read(limit + 1) if painting is not None else b""
        if painting_data:
            if len(painting_data) > limit:
                raise FileTooLargeError("too big")
            own_id = store_upload(services, painting_data, kind="style")[0].id
            style = "own"
        if style == "own" and not own_id:
            raise UnknownStyleError("own painting missing")
        if style != "own" and services.catalog.get(style) is None:
            raise UnknownStyleError(style)
    except (*REFUSALS, ApiError) as exc:
        if isinstance(exc, DecodeBusyError):
            raise  # an outage, not the visitor's mistake: the 503 page (web.errors)
        context = _home_context(services, locale, {"photo": content_id, "style": style, "strength": strength})
        return render(request, "home.html", locale, active="instant", status_code=422, error=friendly_error(locale, exc), **context)
    query = {"photo": content_id, "style": style, "strength": str(_strength(strength))}
    if own_id:
        query["own"] = own_id
    return RedirectResponse(f"/{locale}/?{urlencode(query)}#result", status_code=303)


def _order_video_page(
    services: Services, locale: str, data: bytes, *, style: str, strength: str, painting: UploadFile | None, own_id: str
) -> Response:
    """The home form sent a clip: queue it and show its page."""
    from atelier.service.videos import order_video

    upload = store_upload(services, data, kind="video")[0]
    style_upload = None
    painting_data = painting.file.read(services.settings.max_upload_bytes + 1) if painting is not None else b""
    if painting_data:
        style_upload = store_upload(services, painting_data, kind="style")[0]
    elif style == "own" and own_id:
        style_upload = get_upload(services, own_id)
    view = order_video(
        services,
        upload=upload,
        style_name=None if style_upload is not None else (style or "candy"),
        style_upload=style_upload,
        alpha=_strength(strength) / 100,
        locale=locale,
    )
    return RedirectResponse(f"/{locale}/videos/{view.id}", status_code=303)


@router.get("/{lang}/videos/{video_id}")
async def video_page(services: ServicesDep, request: Request, lang: str, video_id: str) -> Response:
    """A video job: progress, then the painted clip to play and download."""
    from atelier.service.videos import get_video

    locale = page_locale(lang)
    view = await run_in_threadpool(get_video, services, video_id)
    if view is None:
        return not_found(request, locale)
    return render(request, "video.html", locale, active="instant", video=view.public())


def _commission_context(services: Services, locale: str, *, photo_id: str = "", style: str = "", email: str = "") -> dict[str, Any]:
    styles = _style_cards(services.catalog.commissionable(), locale)
    return {
        "styles": styles,
        "photo_id": photo_id,
        "photo_url": f"/api/v1/uploads/{photo_id}/image" if photo_id else None,
        "selected_style": style or (styles[0]["name"] if styles else ""),
        "email": email,
        "preview_size": services.settings.preview_max_size,
    }


@router.get("/{lang}/commission")
def commission_page(services: ServicesDep, request: Request, lang: str, photo: str = "", style: str = "") -> Response:
    """Order a commission: a hand-picked style, a photo (or the one from the instant page), an email."""
    locale = page_locale(lang)
    if photo:
        try:
            get_upload(services, photo)
        except UploadNotFoundError:
            photo = ""
    return render(request, "commission.html", locale, active="commission", error=None, **_commission_context(services, locale, photo_id=photo, style=style))


@router.post("/{lang}/commission", dependencies=[Depends(commission_guard)])
def commission_form(
    services: ServicesDep,
    request: Request,
    lang: str,
    email: Annotated[str, Form()] = "",
    style: Annotated[str, Form()] = "",
    photo: Annotated[UploadFile | None, File()] = None,
    content_id: Annotated[str, Form()] = "",
) -> Response:
    locale = page_locale(lang)
    limit = services.settings.max_upload_bytes
    try:
        data = photo.file.read(limit + 1) if photo is not None else b""
        if len(data) > limit:
            raise FileTooLargeError("too big")
        view = order_artwork(
            services,
            style_name=style,
            email=email,
            locale=locale,
            content=data or None,
            content_id=None if data else (content_id or None),
        )
    except (*REFUSALS, ApiError) as exc:
        if isinstance(exc, DecodeBusyError):
            raise  # an outage, not the visitor's mistake: the 503 page (web.errors)
        context = _commission_context(services, locale, photo_id=content_id, style=style, email=email)
        return render(request, "commission.html", locale, active="commission", status_code=422, error=friendly_error(locale, exc), **context)
    return RedirectResponse(f"/{locale}/artworks/{view.id}", status_code=303)


@router.get("/{lang}/artworks/{artwork_id}")
async def artwork_page(services: ServicesDep, request: Request, lang: str, artwork_id: str) -> Response:
    """A commission's progress: place in the queue, passes, intermediate pictures."""
    locale = page_locale(lang)
    view = await run_in_threadpool(get_artwork, services, artwork_id)
    if view is None:
        return not_found(request, locale)
    return render(
        request,
        "artwork.html",
        locale,
        artwork=view.public(services, locale=locale),
        final=view.status in ArtworkStatus.FINAL,
    )


@router.get("/{lang}/a/{token}")
async def preview_page(services: ServicesDep, request: Request, lang: str, token: str) -> Response:
    """The watermarked artwork behind the mailed link."""
    locale = page_locale(lang)
    info = await run_in_threadpool(artwork_by_preview_token, services, token)
    if info is None or info.status not in (ArtworkStatus.PREVIEW_READY,) and not info.preview_key:
        return not_found(request, locale)
    entry = services.catalog.get(info.style)
    return render(
        request,
        "preview.html",
        locale,
        headers={"Referrer-Policy": "no-referrer"},
        image_url=f"/a/{token}/preview.jpg",
        width=info.width,
        height=info.height,
        style_title=entry.title(locale) if entry is not None else info.style,
        artist=entry.artist if entry is not None else None,
        price=price_context(services, request, locale) if info.status == ArtworkStatus.PREVIEW_READY else None,
        pay_url=f"/{locale}/a/{token}/pay",
    )


def price_context(services: Services, request: Request, locale: str) -> dict[str, Any] | None:
    """The checkout form's numbers for this buyer: their country's currency, the suggestion and
    the minimum, written for their language (None when the price table is broken: the preview
    still shows, the log says why)."""
    from atelier.service import pricing

    try:
        table = pricing.price_table_of(services.settings)
    except pricing.PriceTableError:
        log.exception("no checkout form: the price table is not valid")
        return None
    from atelier.web.security import client_ip

    # The buyer's own address for the GeoIP lookup: behind a trusted proxy, what it forwarded.
    country = pricing.country_from_request(headers=request.headers, client_ip=client_ip(request) or None, settings=services.settings)
    price = pricing.price_for(country=country, table=table)
    shown = pricing.display_locale(locale, country)
    return {
        "currency": price.currency,
        "country": country or "",
        "suggested": pricing.format_amount(price.suggested_minor, currency=price.currency, locale=shown, exponent=price.exponent),
        "minimum": pricing.format_amount(price.minimum_minor, currency=price.currency, locale=shown, exponent=price.exponent),
        "value": pricing.input_amount(price.suggested_minor, exponent=price.exponent, locale=shown),
        "minimum_minor": price.minimum_minor,
    }


def not_found(request: Request, locale: str) -> Response:
    return render(request, "not_found.html", locale, status_code=404)
