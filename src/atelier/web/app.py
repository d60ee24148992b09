"""The app factory: :func:`create_app` builds the FastAPI app (API, pages, static files) and,
while it runs, the background work of this process -- job workers (threads) and the mail sender.

``atelier serve`` runs it with uvicorn; tests build it on a temporary data dir, with or without
workers. Everything the routes need is on ``app.state.services``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlparse

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from atelier import __version__
from atelier.config import Settings, get_settings
from atelier.service.captcha import Captcha
from atelier.service.context import Services
from atelier.web import errors, security
from atelier.web.limits import BodyLimit, body_limit_for
from atelier.web.middleware import RequestMetrics, SecurityHeaders, content_security_policy

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"


class Background:
    """The threads that work beside the web server: job workers and the mail sender."""

    def __init__(self, services: Services, *, workers: int, mail: bool) -> None:
        self.services = services
        self.workers = workers
        self.mail = mail
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        from atelier.service.catalog_sync import start_catalog_watcher, sync_at_start

        # Before any worker claims a job: the catalog (and weights, when mirrored) from the store.
        sync_at_start(self.services)
        watcher = start_catalog_watcher(self.services, self.stop)
        if watcher is not None:
            self.threads.append(watcher)
        if self.workers > 0:
            from atelier.service.worker import start_worker_threads

            self.threads += start_worker_threads(self.services, self.workers, self.stop)
        if self.mail:
            from atelier.service.worker import start_mail_sender

            self.threads.append(start_mail_sender(self.services, self.stop))
        if self.threads:
            log.info("started %d worker thread(s)%s", self.workers, " and the mail sender" if self.mail else "")

    def close(self, timeout: float = 60.0) -> None:
        """Ask every thread to stop (a worker releases its job) and wait for them."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s did not stop within %.0f s", thread.name, timeout)


def _extra_origins(settings: Settings) -> list[str]:
    """Origins the browser talks to besides the app: the S3 endpoint for direct uploads and links."""
    if not (settings.storage_url or "").startswith("s3://"):
        return []
    if settings.s3_endpoint_url:
        parsed = urlparse(settings.s3_endpoint_url)
        return [f"{parsed.scheme}://{parsed.netloc}"]
    return ["https://*.amazonaws.com"]


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    workers: int | None = None,
    mail: bool = True,
    public_url: str | None = None,
) -> FastAPI:
    """The web app.

    ``services`` are opened from ``settings`` (default: the environment) at start-up unless
    given (then the caller closes them). ``workers`` job worker threads run inside the app
    (default: ATELIER_WORKERS; 0 for none) and, with ``mail``, the mail sender.
    """
    settings = settings or (services.settings if services is not None else get_settings())
    worker_count = settings.workers if workers is None else workers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = app.state.services is None
        if own:
            app.state.services = Services.open(settings, public_url=public_url)
        svc: Services = app.state.services
        background = Background(svc, workers=worker_count, mail=mail)
        app.state.background = background
        background.start()
        log.info("Atelier %s at %s", __version__, svc.public_url)
        try:
            yield
        finally:
            background.close()
            if own:
                svc.close()
                app.state.services = None

    app = FastAPI(
        title="Atelier",
        version=__version__,
        summary="Photos and videos into artworks: instant styles, commissions by email.",
        lifespan=lifespan,
        # /docs is our own page (atelier.web.api_docs): Swagger UI comes from a CDN and runs an
        # inline script, neither of which the Content-Security-Policy allows.
        docs_url=None,
        redoc_url=None,
        # Forms with more parts than ours ever send are refused before they are spooled.
        form_limits=security.FORM_LIMITS,
    )
    app.state.services = services
    app.state.settings = settings
    # A provider without its keys fails here, at start-up, not on the first upload.
    app.state.captcha = captcha = Captcha.from_settings(settings)
    errors.install(app)
    security.install(app)
    # Every HTML form is checked for its CSRF token (the JSON API and the webhook are exempt).
    csrf = [Depends(security.csrf_protect)]

    from atelier.web import blobs, health, instant_api, sheet_api

    app.include_router(health.router)
    app.include_router(instant_api.router)
    app.include_router(sheet_api.router)
    app.include_router(blobs.router)
    from atelier.web import admin, api_docs, artworks_api, batch_api, jobs_api, pages

    app.include_router(api_docs.router)
    app.include_router(artworks_api.router)
    app.include_router(batch_api.router)
    app.include_router(admin.router, dependencies=csrf)
    app.include_router(jobs_api.router)
    from atelier.web import sales

    app.include_router(sales.router, dependencies=csrf)
    app.include_router(pages.router, dependencies=csrf)
    pages.install(app)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # Outermost first: metrics see every request, headers go on every answer.
    # Inner to outer: the address's rate limit, then the body's size, both before the body is read.
    app.add_middleware(security.AddressLimits)
    app.add_middleware(BodyLimit, limit_for=body_limit_for(settings))
    app.add_middleware(
        SecurityHeaders,
        csp=content_security_policy(_extra_origins(settings), captcha_origins=captcha.csp_origins if captcha else ()),
        hsts=(settings.public_url or "").startswith("https://"),
    )
    app.add_middleware(RequestMetrics, metrics=_MetricsProxy(app))
    # Outermost of all: who the client is, decided once (ATELIER_TRUSTED_PROXIES).
    app.add_middleware(security.ClientAddress, trusted=settings.trusted_proxies)
    return app


class _MetricsProxy:
    """The metrics of whichever Services the app holds (they are opened at start-up)."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    @property
    def request_seconds(self):  # type: ignore[no-untyped-def]
        services = self._app.state.services
        if services is None:
            from atelier.service.metrics import Metrics

            return Metrics().request_seconds
        return services.metrics.request_seconds
