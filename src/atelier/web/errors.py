"""Refusals as HTTP answers: one JSON shape for the API, ``{"error": {"code", "message"}}``.

The messages come from the typed errors of the lower layers, which are written for the person
who sent the request; unexpected exceptions answer 500 with a generic message (the details go to
the log, not to the client).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DatabaseError, DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from atelier.art.errors import ArtError, ImageError, ModelMissingError
from atelier.art.blocks.images import FileTooLargeError, ImageTooLargeError
from atelier.service.errors import BusyError, ServiceError
from atelier.store.errors import PolicyError, StorageUnavailableError, StoreError
from atelier.store.integrity import is_damage, note_damage

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A refusal with its status, code and message, raised by the routes."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def status_of(exc: Exception) -> tuple[int, str]:
    """The HTTP status and error code for one of the product's typed errors."""
    from atelier.service.decoding import DecodeBusyError
    from atelier.service.uploads import UploadNotFoundError

    if isinstance(exc, UploadNotFoundError):
        return 404, "not_found"
    if isinstance(exc, (FileTooLargeError, ImageTooLargeError)):
        return 413, "too_large"
    if isinstance(exc, ModelMissingError):
        return 503, "weights_missing"
    if isinstance(exc, (BusyError, DecodeBusyError)):
        return 503, "busy"
    if isinstance(exc, ImageError):
        return 422, "bad_image"
    if isinstance(exc, PolicyError):
        return 403, "upload_refused"
    return 422, "refused"


#: Seconds a client is asked to wait (Retry-After) while the database or the storage is away.
DATABASE_RETRY_AFTER = 10
STORAGE_RETRY_AFTER = 5


def wants_page(request: Request) -> bool:
    """Whether the request came from a page (a browser asking for HTML, not the JSON API):
    it then gets a friendly page in its language rather than a JSON error."""
    path = request.url.path
    if path.startswith(("/api/", "/static/", "/blobs/")) or path in ("/healthz", "/readyz", "/metrics"):
        return False
    return "text/html" in request.headers.get("accept", "")


def unavailable_page(request: Request, *, retry_after: int) -> Response:
    """503 with Retry-After: the page that says "back in a moment", in the page's language."""
    from atelier.service import i18n
    from atelier.web.templating import render

    first = request.url.path.strip("/").split("/", 1)[0]
    locale = first if first in i18n.LOCALES else i18n.negotiate(request.headers.get("accept-language"))
    return render(
        request,
        "unavailable.html",
        locale,
        status_code=503,
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
    )


def error_page(request: Request) -> Response:
    """500: a short page in the page's language ("something went wrong on our side"), for a
    browser that asked for a page (the API answers JSON)."""
    from atelier.service import i18n
    from atelier.web.templating import render

    first = request.url.path.strip("/").split("/", 1)[0]
    locale = first if first in i18n.LOCALES else i18n.negotiate(request.headers.get("accept-language"))
    message = i18n.translations(locale).gettext("Something went wrong on our side. Please try again in a moment.")
    return render(request, "error.html", locale, status_code=500, message=message)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers)

    async def _refused(request: Request, exc: Exception) -> Response:
        status, code = status_of(exc)
        headers = {"Retry-After": "5"} if status == 503 else None
        if status >= 500:
            log.warning("refused with %s: %s", status, exc)
            if wants_page(request):
                return unavailable_page(request, retry_after=5)
        return JSONResponse(error_body(code, str(exc)), status_code=status, headers=headers)

    # The art layer's refusals about the input and the service's own answer alike.
    app.add_exception_handler(ArtError, _refused)
    app.add_exception_handler(ServiceError, _refused)

    @app.exception_handler(PolicyError)
    async def _policy_error(_request: Request, exc: PolicyError) -> JSONResponse:
        return JSONResponse(error_body("upload_refused", str(exc)), status_code=403)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> Response:
        log.error("store error: %s", exc)
        if isinstance(exc, StorageUnavailableError) and wants_page(request):
            return unavailable_page(request, retry_after=STORAGE_RETRY_AFTER)
        return JSONResponse(
            error_body("store_error", "storage is not available right now; try again"),
            status_code=503,
            headers={"Retry-After": str(STORAGE_RETRY_AFTER)},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = []
        for problem in exc.errors():
            where = ".".join(str(p) for p in problem.get("loc", ()) if p not in ("body", "query", "path"))
            fields.append({"field": where, "message": problem.get("msg", "invalid")})
        message = "; ".join(f"{f['field']}: {f['message']}" if f["field"] else f["message"] for f in fields)
        return JSONResponse(error_body("invalid_request", message or "invalid request", fields=fields), status_code=422)

    async def _database_down(request: Request, exc: DBAPIError) -> Response:
        first_line = (str(exc.orig or exc).strip().splitlines() or [type(exc).__name__])[0]
        if is_damage(exc):
            # Not a restart to wait out: an operator must restore the file. /readyz says so at
            # once (note_damage); the visitor gets the same 503 as for an outage.
            services = getattr(request.app.state, "services", None)
            advice = note_damage(services.engine, exc) if services is not None else first_line
            log.error("on %s %s: %s", request.method, request.url.path, advice)
        else:
            log.error("database unavailable on %s %s: %s", request.method, request.url.path, first_line)
        if wants_page(request):
            return unavailable_page(request, retry_after=DATABASE_RETRY_AFTER)
        return JSONResponse(
            error_body("unavailable", "the service is busy or restarting; try again in a moment"),
            status_code=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )

    # OperationalError: the server refused or dropped the connection; InterfaceError: psycopg
    # found its connection closed under it. Both pass once the database is back (the pool
    # pre-pings, so no restart is needed), hence 503 and not 500.
    app.add_exception_handler(OperationalError, _database_down)  # type: ignore[arg-type]
    app.add_exception_handler(InterfaceError, _database_down)  # type: ignore[arg-type]

    # A damaged SQLite file raises a plain DatabaseError (SQLITE_CORRUPT, SQLITE_NOTADB). Its
    # own handler, not the catch-all's: Starlette re-raises what reaches the catch-all after
    # answering, and the server then drops the keep-alive connection under the next request.
    async def _database_error(request: Request, exc: DatabaseError) -> Response:
        if is_damage(exc) or exc.connection_invalidated:
            return await _database_down(request, exc)
        log.error("database error on %s %s", request.method, request.url.path, exc_info=exc)
        if wants_page(request):
            return error_page(request)
        return JSONResponse(error_body("internal", "something went wrong on our side; try again"), status_code=500)

    app.add_exception_handler(DatabaseError, _database_error)  # type: ignore[arg-type]

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        if isinstance(exc, DBAPIError) and (exc.connection_invalidated or is_damage(exc)):
            return await _database_down(request, exc)
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        if wants_page(request):
            return error_page(request)
        return JSONResponse(error_body("internal", "something went wrong on our side; try again"), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 401: "unauthorized", 403: "forbidden"}
        message = exc.detail if isinstance(exc.detail, str) else "refused"
        return JSONResponse(error_body(codes.get(exc.status_code, "error"), message), status_code=exc.status_code, headers=getattr(exc, "headers", None))
