"""Two small ASGI middlewares: security headers on every answer, and request metrics.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, which buffers nothing but wraps each
request in a task group; server-sent events and big image answers go through untouched.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier.service.metrics import Metrics


def content_security_policy(extra_origins: Iterable[str] = (), *, captcha_origins: Iterable[str] = ()) -> str:
    """A strict policy: everything from this origin only, no inline script or style, no
    framing. ``extra_origins`` (an S3 endpoint) may receive uploads and serve images;
    ``captcha_origins`` (only when a captcha is on) may serve the widget's script and frame."""
    extra = " ".join(sorted(set(extra_origins)))
    others = f" {extra}" if extra else ""
    bots = " ".join(dict.fromkeys(captcha_origins))
    widget = f" {bots}" if bots else ""
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self'{widget}",
            f"style-src 'self'{widget}",
            f"img-src 'self' data: blob:{others}",
            f"media-src 'self' blob:{others}",
            f"connect-src 'self'{others}{widget}",
            f"form-action 'self'{others}",
            f"frame-src {bots}" if bots else "frame-src 'none'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeaders:
    """Adds CSP, no-sniff, referrer and framing headers unless the route set its own; HSTS when
    the app is served over HTTPS; and the cookies guards queued in the scope's state (CSRF,
    captcha pass), which the routes' own responses know nothing of."""

    def __init__(self, app: ASGIApp, *, csp: str, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts
        self.headers = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The guards' cookies go in here; make sure every layer shares this one dict.
        scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                headers.extend(h for h in self.headers if h[0] not in present)
                if (self.hsts or scope.get("scheme") == "https") and b"strict-transport-security" not in present:
                    headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
                for cookie in scope.get("state", {}).get("atelier_set_cookies", ()):
                    headers.append((b"set-cookie", cookie.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestMetrics:
    """Observes each request's latency by route template (not the raw path: ids would make a
    new series per request), method and status class."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            if template.startswith("/static"):
                template = "/static"
            self.metrics.request_seconds.labels(template, scope["method"], f"{status['code'] // 100}xx").observe(
                time.perf_counter() - started
            )
