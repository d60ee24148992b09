"""``atelier serve`` (the web app, with job workers inside it by default) and ``atelier worker``
(job workers alone, for other machines sharing PostgreSQL and S3)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

import typer

from atelier.cli.app import app, fail
from atelier.config import Settings, get_settings
from atelier.runtime import one_malloc_arena

log = logging.getLogger(__name__)


def _log_info() -> None:
    # The product's own messages (where it listens, mails written to the outbox with their
    # links, jobs done) are worth seeing when it runs as a server; the root logger stays at
    # the CLI's level for everything else.
    logging.getLogger("atelier").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _check_device(device: str) -> None:
    """ATELIER_DEVICE=cuda on a machine without a GPU: refuse at start, not on every request."""
    from atelier.art.blocks.devices import resolve_device
    from atelier.art.errors import DeviceError

    try:
        resolve_device(device)
    except DeviceError as exc:
        raise fail(f"ATELIER_DEVICE: {exc}") from None


def _check_extras(settings: Settings) -> None:
    """A setting that needs an optional package that is missing: refuse at start, in one line."""
    from atelier.extras import missing_for

    missing = missing_for(settings)
    if missing is not None:
        raise fail(str(missing))


def _check_database(settings: Settings) -> None:
    """A damaged SQLite file: refuse at start in one line naming the file and the fix (the
    server would otherwise fail inside its start-up with a traceback that names neither)."""
    from atelier.store.errors import DatabaseDamagedError
    from atelier.store.integrity import check_database_file

    assert settings.database_url is not None
    try:
        check_database_file(settings.database_url)
    except DatabaseDamagedError as exc:
        raise fail(str(exc)) from None


@app.command("serve")
def serve(
    host: str | None = typer.Option(None, help="Address to listen on (default: ATELIER_HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, min=0, max=65535, help="Port (default: ATELIER_PORT, 8000)."),
    workers: int | None = typer.Option(
        None, "--workers", min=0, help="Job workers inside the server (default: ATELIER_WORKERS, 1); 0 for none."
    ),
) -> None:
    """Run Atelier: the web pages, the JSON API and (unless --workers 0) the painting workers.

    The first start creates the database (SQLite in the data dir unless ATELIER_DATABASE_URL
    says otherwise). Stop with Ctrl-C or SIGTERM: a worker that is painting hands its job back.
    """
    one_malloc_arena()
    import uvicorn

    from atelier.service.context import public_url_of
    from atelier.web.app import create_app

    _log_info()
    settings = get_settings()
    _check_device(settings.device)
    _check_extras(settings)
    _check_database(settings)
    host = host or settings.host
    port = settings.port if port is None else port
    public_url = public_url_of(settings, host=host, port=port)
    try:
        application = create_app(settings, workers=workers, public_url=public_url)
    except Exception as exc:  # noqa: BLE001 - a setting that cannot work: one line, exit 2
        raise fail(str(exc)) from None
    log.info("serving on http://%s:%d (public address %s)", host, port, public_url)
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="info",
        # Off: uvicorn would believe X-Forwarded-For from 127.0.0.1 by default and rewrite the
        # peer before ATELIER_TRUSTED_PROXIES is consulted (atelier.web.security.ClientAddress
        # is the one place that decides the client's address).
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


@app.command("worker")
def worker(
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="Jobs painted at once by this process."),
    kind: list[str] = typer.Option([], "--kind", help="Only jobs of this kind (repeatable; default: all)."),
    mail: bool = typer.Option(True, "--mail/--no-mail", help="Also send the outbox's mails from this process."),
) -> None:
    """Run painting workers without the web app, e.g. on other machines.

    Point them at the same PostgreSQL and S3 as the server (ATELIER_DATABASE_URL,
    ATELIER_STORAGE_URL).

    SIGTERM or Ctrl-C: a worker that is painting stops at its next step and hands its job back
    to the queue; a second signal exits at once (the job's lease then runs out and another
    worker takes it).
    """
    one_malloc_arena()
    from atelier.service.catalog_sync import start_catalog_watcher, sync_at_start
    from atelier.service.context import Services
    from atelier.service.worker import start_mail_sender, start_worker_threads

    _log_info()
    settings = get_settings()
    _check_device(settings.device)
    _check_extras(settings)
    _check_database(settings)
    try:
        services = Services.open(settings)
    except Exception as exc:  # noqa: BLE001
        raise fail(f"cannot start: {exc}") from None
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping (a job in progress is handed back)", signal.Signals(signum).name)
        stop.set()
        # A second signal: the default behaviour, i.e. exit now.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sync_at_start(services)
        threads = start_worker_threads(services, concurrency, stop, kinds=kind or None)
        watcher = start_catalog_watcher(services, stop)
        if mail:
            threads.append(start_mail_sender(services, stop))
        print(f"atelier worker: {concurrency} worker(s) on {services.engine.url.render_as_string(hide_password=True)}", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            if not any(t.is_alive() for t in threads):
                break
        for thread in threads:
            thread.join()
        if watcher is not None:
            watcher.join(5)
    except ValueError as exc:
        raise fail(str(exc)) from None
    finally:
        services.close()
    log.info("worker process stopped")
