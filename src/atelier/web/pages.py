"""The HTML pages, in English and Spanish: the instant journey (home), the commission form, an
artwork's status page and the preview page behind the mailed link.

Every form works without JavaScript (a POST, then a redirect to a page that shows the result);
the scripts in ``static/js`` make the same pages quicker: uploads and repaints without reloads,
drag and drop, the before/after slider, live progress.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlencode

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from atelier.art.errors import ImageError, ModelMissingError
from atelier.art.blocks.images import FileTooLargeError, ImageTooLargeError
from atelier.service import i18n
from atelier.service.errors import REFUSALS, UnknownStyleError
from atelier.service.artworks import ArtworkStatus, OrderError, get_artwork, order_artwork
from atelier.service.catalog import StyleEntry
from atelier.service.context import Services
from atelier.service.decoding import DecodeBusyError
from atelier.service.instant import fit_dims
from atelier.service.uploads import UploadError, UploadNotFoundError, direct_uploads, get_upload, sniff_video, store_upload
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


#: What went wrong, as a code a redirect can carry (POST-redirect-GET: the page after a bounced
#: form is a GET, so Back and reload never ask to send the form again), and the words for it.
ERRORS: dict[str, str] = {
    "too_big": i18n.lazy("This picture is too big. Try a smaller one (a photo from a phone is fine)."),
    "unreadable": i18n.lazy("We could not read this picture. Try a JPEG, PNG or WebP photo."),
    "photo_gone": i18n.lazy("That photo is no longer here. Please choose it again."),
    "unavailable": i18n.lazy("This style is not available on this server right now."),
    "choose_style": i18n.lazy("Please choose one of the styles."),
    "choose_painting": i18n.lazy("Choose the painting to copy the style of."),
    "bad_email": i18n.lazy("That email address does not look right. Please check it."),
    "choose_commission_style": i18n.lazy("Please choose one of the hand-picked styles."),
    "choose_photo": i18n.lazy("Please choose a photo."),
    "bad_request": i18n.lazy("Something about this request is not right. Please try again."),
    "failed": i18n.lazy("Something went wrong on our side. Please try again in a moment."),
}


def error_code(exc: Exception) -> str:
    """The :data:`ERRORS` code for ``exc``."""
    if isinstance(exc, (FileTooLargeError, ImageTooLargeError)):
        return "too_big"
    if isinstance(exc, ImageError):
        return "unreadable"
    if isinstance(exc, UploadNotFoundError):
        return "photo_gone"
    if isinstance(exc, ModelMissingError):
        return "unavailable"
    if isinstance(exc, UnknownStyleError):
        return "choose_painting" if "own painting" in str(exc) else "choose_style"
    if isinstance(exc, OrderError):
        message = str(exc)
        if "email" in message:
            return "bad_email"
        if "style" in message:
            return "choose_commission_style"
        return "choose_photo"
    if isinstance(exc, (UploadError, *REFUSALS, ApiError)):
        return "bad_request"
    return "failed"


def error_message(locale: str, code: str | None) -> str | None:
    """The words for an :data:`ERRORS` code in ``locale`` (None for no code or an unknown one)."""
    message = ERRORS.get(code or "")
    return i18n.gettext(locale, message) if message is not None else None


def friendly_error(locale: str, exc: Exception) -> str:
    """A message for the page, in its language (the API's messages are English)."""
    return error_message(locale, error_code(exc)) or ""


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


def _percent(value: str | int | None, *, default: int, low: int = 0, high: int = 100) -> int:
    try:
        return max(low, min(high, int(value))) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _strength(value: str | int | None) -> int:
    return _percent(value, default=100)


def _home_context(services: Services, locale: str, params: dict[str, str], *, photo: Any = None) -> dict[str, Any]:
    """What the instant page shows for its query: the chosen photo, style and options, and the
    painting's address when there is something to paint (so that it works without scripts)."""
    catalog = services.catalog
    max_size = services.settings.instant_max_size
    photo_id = photo.id if photo is not None else ""
    style = params.get("style") or ""
    own_id = params.get("own") or ""
    strength = _strength(params.get("strength"))
    preserve = params.get("preserve") in ("1", "on", "true")
    blend_style = params.get("blend_style") or ""
    entry = catalog.get(blend_style)
    if entry is None or entry.kind != "painting":
        blend_style = ""
    blend = _percent(params.get("blend"), default=50, low=10, high=90)
    result = None
    if photo is not None and (style and style != "own" or own_id):
        query: dict[str, Any] = {"content_id": photo_id, "alpha": f"{strength / 100:.2f}"}
        if style == "own" or (own_id and not style):
            query["style_id"] = own_id
        else:
            query["style_name"] = style
        if preserve:
            query["preserve_color"] = "true"
        if blend_style and (catalog.get(style) is None or catalog.get(style).kind == "painting"):  # type: ignore[union-attr]
            query |= {"blend_name": blend_style, "blend": f"{blend / 100:.2f}"}
        width, height = photo.width or max_size, photo.height or max_size
        painted = fit_dims(width, height, min(max(width, height), max_size))
        result = {
            "url": "/api/v1/stylize?" + urlencode(query),
            "photo_url": f"/api/v1/uploads/{photo_id}/image",
            "style": style,
            "width": painted[0],
            "height": painted[1],
            "reduced": max(width, height) > max_size,
        }
    filters = _style_cards(catalog.filters(installed=True), locale)
    return {
        "filters": filters,
        "paintings": _style_cards(catalog.paintings(), locale),
        "selected_style": style or (filters[0]["name"] if filters else "candy"),
        "photo_id": photo_id,
        "photo": photo,
        "own_id": own_id,
        "strength": strength,
        "preserve": preserve,
        "blend_style": blend_style,
        "blend": blend,
        "result": result,
        "max_size": max_size,
        "can_commission": bool(catalog.commissionable()),
        # With S3 the page's script sends photos straight to the bucket (the form without
        # scripts still posts them here).
        "direct_upload": direct_uploads(services),
    }


@router.get("/{lang}/")
def home(services: ServicesDep, request: Request, lang: str) -> Response:
    """The instant journey: a photo, a style, the painted picture (``?photo=&style=...``: the
    form's result, or a reload; ``error=`` a bounced form's reason)."""
    locale = page_locale(lang)
    params = dict(request.query_params)
    error = error_message(locale, params.get("error"))
    photo = None
    if params.get("photo"):
        try:
            photo = get_upload(services, params["photo"])
        except UploadNotFoundError as exc:
            error = friendly_error(locale, exc)
    return render(request, "home.html", locale, active="instant", error=error, **_home_context(services, locale, params, photo=photo))


def _home_query(**values: str) -> str:
    return urlencode({k: v for k, v in values.items() if v})


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
    preserve: Annotated[str, Form()] = "",
    blend_style: Annotated[str, Form()] = "",
    blend: Annotated[str, Form()] = "50",
) -> Response:
    """The home form without JavaScript: keep the files, then redirect to the page that shows
    the result -- or, when something is wrong, to the same page with the reason (the photo
    that was there before stays)."""
    locale = page_locale(lang)
    limit = services.settings.max_upload_bytes
    options = {"strength": str(_strength(strength)), "preserve": "1" if preserve else "", "blend_style": blend_style, "blend": blend if blend_style else ""}
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
        code = error_code(exc)
        # A photo that is gone is not offered again; a bad new file leaves the last good one.
        kept = "" if code == "photo_gone" else content_id
        query = _home_query(photo=kept, style=style if kept else "", own=own_id if kept else "", error=code, **options)
        return RedirectResponse(f"/{locale}/?{query}#result", status_code=303)
    query = _home_query(photo=content_id, style=style, own=own_id, **options)
    return RedirectResponse(f"/{locale}/?{query}#result", status_code=303)


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
    return render(request, "video.html", locale, active="instant", video=view.public(locale))


def _commission_context(services: Services, locale: str, *, photo_id: str = "", style: str = "", email: str = "") -> dict[str, Any]:
    styles = _style_cards(services.catalog.commissionable(), locale)
    return {
        "direct_upload": direct_uploads(services),
        "styles": styles,
        "photo_id": photo_id,
        "photo_url": f"/api/v1/uploads/{photo_id}/image" if photo_id else None,
        "selected_style": style or (styles[0]["name"] if styles else ""),
        "email": email,
        "preview_size": services.settings.preview_max_size,
        "awaiting": [
            {"name": s.name, "title": s.title_in(locale), "artist": s.artist, "year": s.year,
             "initials": _initial(s.title_in(locale))}
            for s in services.catalog.awaiting()
        ],
    }


#: Words a title's placeholder tile skips for its letter ("The Starry Night" -> S).
_ARTICLES = frozenset({"the", "a", "an", "el", "la", "los", "las", "un", "una", "le", "les", "der", "die", "das"})


def _initial(title: str) -> str:
    """The letter on the tile of a style whose painting is not here yet."""
    words = [w for w in title.split() if w[:1].isalnum()]
    chosen = next((w for w in words if w.lower() not in _ARTICLES), words[0] if words else "?")
    return chosen[0].upper()


#: A bounced commission form's email, kept for the page it is redirected to (POST-redirect-GET):
#: a cookie rather than the address bar, which ends up in histories and logs.
FORM_EMAIL_COOKIE = "atelier_form_email"
#: The problems a commission form can have, in the order the page lists them.
COMMISSION_PROBLEMS = ("too_big", "unreadable", "photo_gone", "choose_photo", "choose_commission_style", "bad_email", "bad_request")


@router.get("/{lang}/commission")
def commission_page(
    services: ServicesDep, request: Request, lang: str, photo: str = "", style: str = "", problems: str = ""
) -> Response:
    """Order a commission: a hand-picked style, a photo (or the one from the instant page), an
    email. ``problems`` lists what a bounced form got wrong (every one of them)."""
    locale = page_locale(lang)
    codes = [code for code in COMMISSION_PROBLEMS if code in problems.split(",")]
    if photo:
        try:
            get_upload(services, photo)
        except UploadNotFoundError:
            photo = ""
            if "photo_gone" not in codes:
                codes.append("photo_gone")
    email = unquote(request.cookies.get(FORM_EMAIL_COOKIE, ""))[:254] if codes else ""
    response = render(
        request,
        "commission.html",
        locale,
        active="commission",
        errors=[error_message(locale, code) for code in codes],
        invalid=set(codes),
        **_commission_context(services, locale, photo_id=photo, style=style, email=email),
    )
    if FORM_EMAIL_COOKIE in request.cookies:
        response.delete_cookie(FORM_EMAIL_COOKIE, path=f"/{locale}/commission")
    return response


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
    """Take the order, or send the form back with everything that is wrong (a good photo is
    kept, so it is not chosen twice)."""
    from atelier.service.artworks import check_email

    locale = page_locale(lang)
    limit = services.settings.max_upload_bytes
    problems: list[str] = []
    data = photo.file.read(limit + 1) if photo is not None else b""
    if data:
        if len(data) > limit:
            problems.append("too_big")
        else:
            try:
                content_id = store_upload(services, data, kind="content", temporary=True)[0].id
            except (*REFUSALS, ApiError) as exc:
                if isinstance(exc, DecodeBusyError):
                    raise  # an outage, not the visitor's mistake: the 503 page (web.errors)
                problems.append(error_code(exc))
    elif content_id:
        try:
            get_upload(services, content_id)
        except UploadNotFoundError:
            content_id = ""
            problems.append("photo_gone")
    else:
        problems.append("choose_photo")
    entry = services.catalog.get(style)
    if entry is None or not entry.commission:
        problems.append("choose_commission_style")
    try:
        check_email(email)
    except OrderError:
        problems.append("bad_email")
    if not problems:
        try:
            view = order_artwork(services, style_name=style, email=email, locale=locale, content_id=content_id)
        except (*REFUSALS, ApiError) as exc:
            if isinstance(exc, DecodeBusyError):
                raise
            problems.append(error_code(exc))
        else:
            return RedirectResponse(f"/{locale}/artworks/{view.id}", status_code=303)
    query = urlencode({k: v for k, v in {"photo": content_id, "style": style, "problems": ",".join(problems)}.items() if v})
    response = RedirectResponse(f"/{locale}/commission?{query}#order", status_code=303)
    response.set_cookie(
        FORM_EMAIL_COOKIE, quote(email.strip()[:254]), max_age=600, path=f"/{locale}/commission", httponly=True, samesite="lax",
        secure=services.public_url.startswith("https://"),
    )
    return response


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


def not_found(request: Request, locale: str) -> Response:
    return render(request, "not_found.html", locale, status_code=404)
