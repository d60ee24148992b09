"""Request bodies past their size limit are answered 413 before they are read.

An ASGI middleware in front of everything: a ``Content-Length`` over the limit of the path is
refused at once, without reading a byte of the body (the server then closes the connection
rather than drain it); a body without one (chunked) is counted as it streams in and refused the
moment it passes the limit. Either way the app never holds more than the limit.

The limit depends on the path: the routes that take a clip allow the video size, those that take
one or two pictures that many image sizes, everything else (JSON, the small forms, the webhook)
:data:`SMALL_BODY`. Each adds :data:`MULTIPART_SLACK` for the form's own bytes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier.config import Settings

log = logging.getLogger(__name__)

#: Room for multipart boundaries, part headers and the form's small fields.
MULTIPART_SLACK = 1024 * 1024
#: The most any other request may send: JSON bodies, the small forms, webhooks.
SMALL_BODY = 1024 * 1024

_PAGE_INSTANT = re.compile(r"^/[a-z]{2}/instant/?$")
_PAGE_COMMISSION = re.compile(r"^/[a-z]{2}/commission/?$")


def body_limit_for(settings: Settings) -> Callable[[str], int]:
    """A function from a request path to the most bytes its body may have."""
    image, video = settings.max_upload_bytes, settings.max_video_bytes

    def limit(path: str) -> int:
        if path in ("/api/v1/uploads", "/api/v1/videos"):
            return max(image, video) + MULTIPART_SLACK
        if path == "/blobs":
            return max(image, video) + MULTIPART_SLACK
        if _PAGE_INSTANT.match(path):
            return max(image, video) + image + MULTIPART_SLACK  # a photo or clip, and a painting
        if path == "/api/v1/batches":
            return settings.batch_max_bytes + MULTIPART_SLACK  # every photo and painting together
        if path == "/api/v1/stylize":
            return 2 * image + MULTIPART_SLACK  # a photo and a painting
        if path == "/api/v1/artworks" or _PAGE_COMMISSION.match(path):
            return image + MULTIPART_SLACK
        return SMALL_BODY

    return limit


class _TooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes its limit."""


class BodyLimit:
    """Refuses request bodies over the path's limit with 413, before reading them."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            log.info("refused a %d-byte body for %s (limit %d) before reading it", declared, scope.get("path"), limit)
            await _refuse(scope, receive, send, limit)
            return

        received = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                # The app answered after the body broke off (e.g. a 400 for an unreadable
                # form): the true reason is the size; our 413 goes out instead.
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            pass
        except BaseException as exc:
            if not over or isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            # Parsers wrap what receive raised in their own errors, or in exception groups.
        if over and not started:
            log.info("refused a streamed body for %s past %d bytes", scope.get("path"), limit)
            await _refuse(scope, receive, send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    from atelier.web.security import MSG_TOO_BIG, Refusal, refusal_response

    mib = max(1, round(limit / (1024 * 1024)))
    refusal = Refusal(413, "too_large", f"the request is too big: at most {mib} MiB", page_message=MSG_TOO_BIG)
    request = Request(scope, receive)
    try:
        response = refusal_response(request, refusal)
    except Exception:  # noqa: BLE001 - the page could not be made (app not started): plain JSON
        from starlette.responses import Response

        body = json.dumps({"error": {"code": refusal.code, "message": refusal.message}}).encode()
        response = Response(body, status_code=413, media_type="application/json")
    # The rest of the body is never read: tell the client (and uvicorn) the connection ends here.
    response.headers["Connection"] = "close"
    await response(scope, receive, send)
