"""Abuse protection of the web app: the client's address, CSRF tokens on the HTML forms, the bot
check (captcha) and the rate limits, and how their refusals are answered.

* **Client address**: the connection's peer, unless the peer is one of ATELIER_TRUSTED_PROXIES;
  then the right-most address of ``X-Forwarded-For`` that is not itself a trusted proxy (what
  the nearest untrusted hop told our proxy -- everything left of it the client may have made up).
* **CSRF**: a random value in an HttpOnly ``atelier_csrf`` cookie and, in every form, a hidden
  ``csrf_token`` that is an HMAC of it under the app's secret (so a cookie planted by a sibling
  subdomain is useless without the matching token). Checked in constant time on every unsafe
  request to a page (the ``/{lang}/...`` forms, ``/admin``); the JSON API (``/api/...``, which
  a browser cannot send cross-site with a cookie-less body, the Stripe webhook among it) and
  the signed direct-upload endpoint (``/blobs``) are exempt, as are requests with an
  ``Authorization`` header (a browser never adds one cross-site).
* **Captcha**: see :mod:`atelier.service.captcha`. A solved challenge gives the browser a signed
  ``atelier_human`` cookie, bound to its address, for ATELIER_CAPTCHA_PASS_MINUTES, so the
  instant page's several uploads need one challenge, not one each.
* **Rate limits**: see :mod:`atelier.service.ratelimit`. Per address they are counted by
  :class:`AddressLimits` before the body is read; per email (it is in the form) by the commission
  routes' dependency.

Refusals answer JSON (``{"error": ...}``) on the API and a short page in the page's language on
the pages, with the right status (403, 413, 429 with ``Retry-After``, 503).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Iterable
from functools import lru_cache
from http.cookies import SimpleCookie
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from atelier.service import i18n
from atelier.service.captcha import GENERIC_FIELD, HEADER, Captcha, CaptchaError, CaptchaUnavailableError
from atelier.service.context import Services
from atelier.service.emails import limit_key
from atelier.service.i18n import lazy
from atelier.service.ratelimit import RateLimitedError, enforce
from atelier.web.templating import add_page_context, render

log = logging.getLogger(__name__)

CSRF_COOKIE = "atelier_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
HUMAN_COOKIE = "atelier_human"
#: Where the scope keeps cookies a route asked for; SecurityHeaders sets them on the answer.
COOKIES_STATE_KEY = "atelier_set_cookies"
#: The most parts a form may have: the largest of ours has 2 files and 8 fields.
FORM_LIMITS: dict[str, int] = {"max_files": 4, "max_fields": 40}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


# ------------------------------------------------------------------------------------------------
# refusals


class Refusal(Exception):
    """A request refused by a guard: JSON on the API, a page on the pages."""

    def __init__(self, status: int, code: str, message: str, *, page_message: str, retry_after: int | None = None, **values: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.page_message = page_message  # an English msgid, translated for the page
        self.values = values
        self.retry_after = retry_after


def page_locale(path: str) -> str | None:
    """The language of a page path (``/es/commission`` -> es; ``/admin`` -> en); None for the
    API and everything else that answers JSON."""
    first = path.lstrip("/").split("/", 1)[0]
    if first in i18n.LOCALES:
        return first
    if first == "admin":
        return "en"
    return None


def refusal_response(request: Request, refusal: Refusal) -> Response:
    headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else {}
    locale = page_locale(request.url.path)
    if locale is None:
        body = {"error": {"code": refusal.code, "message": refusal.message}}
        return JSONResponse(body, status_code=refusal.status, headers=headers)
    gettext = i18n.translations(locale).gettext
    message = gettext(refusal.page_message) % refusal.values if refusal.values else gettext(refusal.page_message)
    return render(request, "refused.html", locale, status_code=refusal.status, headers=headers, message=message)


# The messages of the pages (msgids of web/locales/*/messages.po).
MSG_CSRF = lazy("This form has expired. Please go back, reload the page and send it again.")
MSG_RATE = lazy("You have sent many requests in a short time. Please try again in %(minutes)s minutes.")
MSG_CAPTCHA = lazy("Please complete the check that you are not a robot, then send the form again.")
MSG_CAPTCHA_DOWN = lazy("We cannot check that you are not a robot right now. Please try again in a moment.")
MSG_TOO_BIG = lazy("This picture is too big. Try a smaller one (a photo from a phone is fine).")


def install(app: FastAPI) -> None:
    """Register the refusal handler on ``app``, and give every page its form's CSRF field and
    the bot check's widget (when one is on)."""
    add_page_context(
        app,
        lambda request: {
            "csrf_field": csrf_field(request),
            "captcha_widget": captcha_widget(request),
            "captcha_script": captcha_script(request),
        },
    )

    @app.exception_handler(Refusal)
    async def _refused(request: Request, exc: Refusal) -> Response:
        return refusal_response(request, exc)


# ------------------------------------------------------------------------------------------------
# the client's address


@lru_cache(maxsize=16)
def _networks(trusted: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in trusted)


def _is_trusted(address: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(scope: Scope, trusted: tuple[str, ...]) -> str:
    """The client's address: the peer, or -- behind a trusted proxy -- what it forwarded."""
    client = scope.get("client")
    peer = str(client[0]) if client else ""
    networks = _networks(tuple(trusted))
    if not networks or not _is_trusted(peer, networks):
        return peer
    forwarded: list[str] = []
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            forwarded += [part.strip() for part in value.decode("latin-1").split(",") if part.strip()]
    for address in reversed(forwarded):
        if not _is_trusted(address, networks):
            return address
    return forwarded[0] if forwarded else peer


def client_ip(request: Request) -> str:
    """The client's address as :class:`ClientAddress` decided it for this request."""
    client = request.scope.get("client")
    return str(client[0]) if client else ""


class ClientAddress:
    """ASGI middleware, the outermost layer: the one place that decides who the client is.

    It replaces the scope's ``client`` with :func:`client_address` of the TCP peer and
    ATELIER_TRUSTED_PROXIES, so that every later reader (the rate limits, the captcha, the
    price's country, the log lines, ``request.client``) sees the same address. The server must
    hand it the real peer: ``atelier serve`` runs uvicorn with ``proxy_headers=False``, because
    uvicorn's own handling trusts ``X-Forwarded-For`` from 127.0.0.1 by default and would
    rewrite the peer before this setting is consulted. The original peer stays in the scope's
    state as ``atelier_peer``.
    """

    def __init__(self, app: ASGIApp, *, trusted: tuple[str, ...]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            address = client_address(scope, self.trusted)
            scope.setdefault("state", {})["atelier_peer"] = str(client[0]) if client else ""
            scope["client"] = (address, int(client[1]) if client else 0)
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------------------------
# cookies set by guards (the routes return their own responses)


def queue_cookie(request: Request, name: str, value: str, *, max_age: int, secure: bool, samesite: str = "lax") -> None:
    cookie: SimpleCookie = SimpleCookie()
    cookie[name] = value
    morsel = cookie[name]
    morsel["path"] = "/"
    morsel["max-age"] = str(max_age)
    morsel["httponly"] = True
    morsel["samesite"] = samesite
    if secure:
        morsel["secure"] = True
    state = request.scope.setdefault("state", {})
    state.setdefault(COOKIES_STATE_KEY, []).append(morsel.OutputString())


def _secure(request: Request) -> bool:
    services: Services = request.app.state.services
    return services.public_url.startswith("https://") or request.url.scheme == "https"


def _sign(secret: bytes, purpose: str, value: str) -> str:
    digest = hmac.new(secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


# ------------------------------------------------------------------------------------------------
# CSRF


def csrf_token(request: Request) -> str:
    """The token for this browser's forms; gives the browser its cookie when it has none yet."""
    services: Services = request.app.state.services
    state = request.scope.setdefault("state", {})
    nonce = request.cookies.get(CSRF_COOKIE, "")
    if not _NONCE.match(nonce):
        nonce = state.get("atelier_csrf_nonce") or ""
        if not nonce:
            nonce = secrets.token_urlsafe(24)
            state["atelier_csrf_nonce"] = nonce
            # A year: the token is worthless without the page, and an old tab keeps working.
            queue_cookie(request, CSRF_COOKIE, nonce, max_age=365 * 24 * 3600, secure=_secure(request))
    return _sign(services.secret, "csrf", nonce)


def csrf_field(request: Request) -> Markup:
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, csrf_token(request))


def _csrf_exempt(request: Request) -> bool:
    path = request.url.path
    return (
        request.method in SAFE_METHODS
        or path.startswith("/api/")
        or path == "/blobs"
        or path.startswith("/blobs/")
        or "authorization" in request.headers
    )


async def csrf_protect(request: Request) -> None:
    """A dependency of the page routers: refuses an unsafe request without a matching token."""
    if _csrf_exempt(request):
        return
    services: Services = request.app.state.services
    nonce = request.cookies.get(CSRF_COOKIE, "")
    given = request.headers.get(CSRF_HEADER, "")
    if not given:
        form = await request.form(**FORM_LIMITS)
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else ""
    expected = _sign(services.secret, "csrf", nonce) if _NONCE.match(nonce) else ""
    if not expected or not given or not hmac.compare_digest(expected.encode(), given.encode()):
        log.info("csrf: refused %s %s (%s)", request.method, request.url.path, "no cookie" if not expected else "bad token")
        raise Refusal(403, "csrf_failed", "the form's security token is missing or wrong; reload the page", page_message=MSG_CSRF)


# ------------------------------------------------------------------------------------------------
# captcha


def captcha_of(request: Request) -> Captcha | None:
    return request.app.state.captcha  # type: ignore[no-any-return]


def captcha_widget(request: Request) -> Markup:
    """The widget to put in a protected form ('' when the captcha is off)."""
    captcha = captcha_of(request)
    if captcha is None:
        return Markup("")
    return Markup('<div class="{} captcha" data-sitekey="{}"></div>').format(captcha.widget_class, captcha.site_key)


def captcha_script(request: Request) -> Markup:
    captcha = captcha_of(request)
    if captcha is None:
        return Markup("")
    return Markup('<script src="{}" async defer></script>').format(captcha.script_url)


def _human_pass(request: Request, ip: str) -> bool:
    value = request.cookies.get(HUMAN_COOKIE, "")
    expires, _, signature = value.partition(".")
    if not expires.isdigit() or int(expires) < time.time():
        return False
    services: Services = request.app.state.services
    expected = _sign(services.secret, "human", f"{expires}:{ip}")
    return hmac.compare_digest(expected.encode(), signature.encode())


async def check_captcha(request: Request) -> None:
    captcha = captcha_of(request)
    if captcha is None:
        return
    ip = client_ip(request)
    if _human_pass(request, ip):
        return
    form = await request.form(**FORM_LIMITS)
    token = form.get(captcha.response_field) or form.get(GENERIC_FIELD) or request.headers.get(HEADER)
    try:
        await run_in_threadpool(captcha.verify, token if isinstance(token, str) else None, remote_ip=ip or None)
    except CaptchaUnavailableError as exc:
        raise Refusal(503, "captcha_unavailable", str(exc), page_message=MSG_CAPTCHA_DOWN, retry_after=10) from exc
    except CaptchaError as exc:
        raise Refusal(403, "captcha_failed", str(exc), page_message=MSG_CAPTCHA) from exc
    minutes = request.app.state.settings.captcha_pass_minutes
    if minutes > 0:
        services: Services = request.app.state.services
        expires = str(int(time.time() + minutes * 60))
        value = f"{expires}.{_sign(services.secret, 'human', f'{expires}:{ip}')}"
        queue_cookie(request, HUMAN_COOKIE, value, max_age=int(minutes * 60), secure=_secure(request))


# ------------------------------------------------------------------------------------------------
# rate limits


async def rate_limit(request: Request, scope: str, kind: str, value: str, limit: int) -> None:
    """Count this request of ``value`` against ``limit`` per window; :class:`Refusal` 429 over it."""
    if limit <= 0 or not value:
        return
    services: Services = request.app.state.services
    try:
        await run_in_threadpool(
            enforce,
            services.engine,
            scope=scope,
            kind=kind,
            value=value,
            limit=limit,
            window_seconds=services.settings.rate_limit_window_seconds,
        )
    except RateLimitedError as exc:
        minutes = max(1, -(-exc.retry_after // 60))
        raise Refusal(429, "rate_limited", str(exc), page_message=MSG_RATE, retry_after=exc.retry_after, minutes=minutes) from exc


async def upload_guard(request: Request) -> None:
    """A dependency of every route that takes a file: the captcha (the address's limit was
    counted by :class:`AddressLimits` before the body came in)."""
    await check_captcha(request)


async def commission_guard(request: Request) -> None:
    """A dependency of the commission routes: the limit per email (it is in the form), the captcha."""
    settings = request.app.state.settings
    form = await request.form(**FORM_LIMITS)
    email = form.get("email")
    if isinstance(email, str) and email.strip():
        # Counted under the mailbox, not the spelling: pe+1@ and PE@ are pe@ (the mail still
        # goes to the address as given).
        await rate_limit(request, "commission", "email", limit_key(email), settings.rate_limit_commissions_per_email)
    await check_captcha(request)


# The routes limited per address (method, path), and the setting that says how many per window.
_ADDRESS_LIMITS: tuple[tuple[str, re.Pattern[str], str, str], ...] = (
    ("POST", re.compile(r"^(/api/v1/(uploads|uploads/presign|stylize|videos|batches)|/[a-z]{2}/instant)/?$"), "upload", "rate_limit_uploads_per_ip"),
    ("POST", re.compile(r"^(/api/v1/artworks|/[a-z]{2}/commission)/?$"), "commission", "rate_limit_commissions_per_ip"),
    ("POST", re.compile(r"^/admin/login/?$"), "admin_login", "rate_limit_admin_logins_per_ip"),
    # Painting costs CPU even without a file: the instant page's re-picks of a style, and the
    # sheet of every style on a photo (one batch, counted as one).
    ("GET", re.compile(r"^/api/v1/(stylize|sheet)/?$"), "paint", "rate_limit_paintings_per_ip"),
)


class AddressLimits:
    """ASGI middleware: counts a request to a limited route against its client's address *before*
    its body is read, so a client over its limit is answered 429 without sending its files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "GET"):
            path = scope.get("path", "")
            for method, pattern, name, setting in _ADDRESS_LIMITS:
                if method == scope["method"] and pattern.match(path):
                    request = Request(scope, receive)
                    limit = getattr(request.app.state.settings, setting)
                    try:
                        await rate_limit(request, name, "ip", client_ip(request), limit)
                    except Refusal as refusal:
                        response = refusal_response(request, refusal)
                        response.headers["Connection"] = "close"  # the body is never read
                        await response(scope, receive, send)
                        return
                    except Exception as exc:  # noqa: BLE001 - out here no handler turns it into a 503
                        # The database is away: let the request through uncounted; the route
                        # needs the database too and answers 503 with Retry-After itself.
                        log.warning("rate limit not counted for %s: %s", path, str(exc).splitlines()[0] if str(exc) else exc)
                    break
        await self.app(scope, receive, send)
