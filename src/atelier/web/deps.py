"""Small helpers the routes share: the process's services, bounded reads of uploaded files."""

from __future__ import annotations

from fastapi import Request, UploadFile

from atelier.service.context import Services
from atelier.web.errors import ApiError


def services_of(request: Request) -> Services:
    """The Services the app was started with (a FastAPI dependency)."""
    return request.app.state.services  # type: ignore[no-any-return]


def read_file(upload: UploadFile, limit: int, *, what: str = "file") -> bytes:
    """The uploaded file's bytes, refusing with 413 past ``limit`` without reading further."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        mib = limit / (1024 * 1024)
        raise ApiError(413, "too_large", f"the {what} is too big: at most {mib:.0f} MiB")
    if not data:
        raise ApiError(422, "empty_file", f"the {what} is empty")
    return data


def wants_locale(request: Request, explicit: str | None = None) -> str:
    """The request's language: explicit, else from Accept-Language."""
    from atelier.service import i18n

    if explicit:
        return i18n.normalize(explicit)
    return i18n.negotiate(request.headers.get("accept-language"))
