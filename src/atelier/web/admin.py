"""``/admin``: the operator view. Exists only when ATELIER_ADMIN_TOKEN is set (404 otherwise).

Sign in with the token (a form that opens a session kept in the database, its cookie HttpOnly,
SameSite=Strict and scoped to /admin) or send it as ``Authorization: Bearer <token>``. Both ways
share one rate limit per client address (ATELIER_RATE_LIMIT_ADMIN_LOGINS_PER_IP) and log every
wrong token. Signing out deletes the session, so an old copy of the cookie opens nothing. The
actions are POST forms; the strict same-site cookie is what keeps another site from submitting
them for the operator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from atelier.service import admin
from atelier.service.context import Services
from atelier.service.ratelimit import refund
from atelier.web.deps import services_of
from atelier.web.errors import ApiError
from atelier.web.security import client_ip, rate_limit
from atelier.web.templating import render

log = logging.getLogger(__name__)

router = APIRouter(prefix="/admin", include_in_schema=False)
ServicesDep = Annotated[Services, Depends(services_of)]
COOKIE = "atelier_admin"
#: The rate-limit scope the sign-in form is counted under (web.security's address limits).
LOGIN_SCOPE = "admin_login"


def _enabled(services: Services) -> None:
    if not services.settings.admin_token:
        raise ApiError(404, "not_found", "not found")


async def bearer_ok(services: Services, request: Request, token: str) -> bool:
    """A token in the Authorization header: counted against the address's sign-in limit
    *before* it is compared (guesses sent all at once cannot get past the limit; over it, not
    even the right token is looked at), refunded when it is right (a script reading /admin
    with the token is never refused), logged when it is wrong."""
    settings = services.settings
    ip = client_ip(request)
    await rate_limit(request, LOGIN_SCOPE, "ip", ip, settings.rate_limit_admin_logins_per_ip)
    if admin.check_token(services, token):
        if settings.rate_limit_admin_logins_per_ip > 0:
            await run_in_threadpool(
                refund, services.engine, scope=LOGIN_SCOPE, kind="ip", value=ip, window_seconds=settings.rate_limit_window_seconds
            )
        return True
    log.warning("admin: wrong token from %s (Authorization header)", ip or "?")
    return False


async def _authorised(services: Services, request: Request) -> bool:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return await bearer_ok(services, request, header[7:].strip())
    return await run_in_threadpool(admin.check_session, services, request.cookies.get(COOKIE))


def _login_page(request: Request, *, error: bool = False, status_code: int = 200) -> Response:
    return render(request, "admin_login.html", "en", status_code=status_code, error=error, headers={"Cache-Control": "no-store"})


@router.get("")
async def admin_page(services: ServicesDep, request: Request, status: str | None = None) -> Response:
    _enabled(services)
    if not await _authorised(services, request):
        return _login_page(request, status_code=401)
    data = await run_in_threadpool(admin.overview, services, status=status)
    return render(request, "admin.html", "en", overview=data, status_filter=status or "")


@router.post("/login")
def login(services: ServicesDep, request: Request, token: Annotated[str, Form()] = "") -> Response:
    # Counted per address before the body was read (web.security.AddressLimits).
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
def logout(services: ServicesDep, request: Request) -> Response:
    _enabled(services)
    admin.end_session(services, request.cookies.get(COOKIE))
    response = RedirectResponse("/admin", status_code=303)
    response.delete_cookie(COOKIE, path="/admin")
    return response


async def _act(services: Services, request: Request, action: Callable[[], Any]) -> Response:
    _enabled(services)
    if not await _authorised(services, request):
        raise ApiError(401, "unauthorized", "sign in at /admin first")
    await run_in_threadpool(action)
    return RedirectResponse("/admin", status_code=303)


@router.post("/jobs/{job_id}/cancel")
async def cancel(services: ServicesDep, request: Request, job_id: int) -> Response:
    return await _act(services, request, lambda: admin.cancel_job(services, job_id))


@router.post("/jobs/{job_id}/retry")
async def retry(services: ServicesDep, request: Request, job_id: int) -> Response:
    return await _act(services, request, lambda: admin.retry_job(services, job_id))


@router.post("/jobs/{job_id}/priority")
async def priority(services: ServicesDep, request: Request, job_id: int, priority: Annotated[int, Form()] = 0) -> Response:
    return await _act(services, request, lambda: admin.set_priority(services, job_id, priority))
