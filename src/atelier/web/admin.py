"""``/admin``: the operator view. Exists only when ATELIER_ADMIN_TOKEN is set (404 otherwise).

Sign in with the token (a form that sets a signed, HttpOnly, SameSite=Strict session cookie
scoped to /admin) or send it as ``Authorization: Bearer <token>``. The actions are POST forms;
the strict same-site cookie is what keeps another site from submitting them for the operator.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from atelier.service import admin
from atelier.service.context import Services
from atelier.web.deps import services_of
from atelier.web.errors import ApiError
from atelier.web.security import client_ip
from atelier.web.templating import render

log = logging.getLogger(__name__)

router = APIRouter(prefix="/admin", include_in_schema=False)
ServicesDep = Annotated[Services, Depends(services_of)]
COOKIE = "atelier_admin"


def _enabled(services: Services) -> None:
    if not services.settings.admin_token:
        raise ApiError(404, "not_found", "not found")


def _authorised(services: Services, request: Request) -> bool:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and admin.check_token(services, header[7:].strip()):
        return True
    return admin.check_session(services, request.cookies.get(COOKIE))


def _login_page(request: Request, *, error: bool = False, status_code: int = 200) -> Response:
    return render(request, "admin_login.html", "en", status_code=status_code, error=error, headers={"Cache-Control": "no-store"})


@router.get("")
async def admin_page(services: ServicesDep, request: Request, status: str | None = None) -> Response:
    _enabled(services)
    if not _authorised(services, request):
        return _login_page(request, status_code=401)
    data = await run_in_threadpool(admin.overview, services, status=status)
    return render(request, "admin.html", "en", overview=data, status_filter=status or "")


@router.post("/login")
def login(services: ServicesDep, request: Request, token: Annotated[str, Form()] = "") -> Response:
    _enabled(services)
    if not admin.check_token(services, token):
        log.warning("admin: wrong token from %s", client_ip(request) or "?")
        return _login_page(request, error=True, status_code=401)
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(
        COOKIE,
        admin.session_value(services),
        max_age=admin.SESSION_SECONDS,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=services.public_url.startswith("https://"),
    )
    return response


@router.post("/logout")
def logout(services: ServicesDep) -> Response:
    _enabled(services)
    response = RedirectResponse("/admin", status_code=303)
    response.delete_cookie(COOKIE, path="/admin")
    return response


def _act(services: Services, request: Request, action) -> Response:  # type: ignore[no-untyped-def]
    _enabled(services)
    if not _authorised(services, request):
        raise ApiError(401, "unauthorized", "sign in at /admin first")
    action()
    return RedirectResponse("/admin", status_code=303)


@router.post("/jobs/{job_id}/cancel")
def cancel(services: ServicesDep, request: Request, job_id: int) -> Response:
    return _act(services, request, lambda: admin.cancel_job(services, job_id))


@router.post("/jobs/{job_id}/retry")
def retry(services: ServicesDep, request: Request, job_id: int) -> Response:
    return _act(services, request, lambda: admin.retry_job(services, job_id))


@router.post("/jobs/{job_id}/priority")
def priority(services: ServicesDep, request: Request, job_id: int, priority: Annotated[int, Form()] = 0) -> Response:
    return _act(services, request, lambda: admin.set_priority(services, job_id, priority))
