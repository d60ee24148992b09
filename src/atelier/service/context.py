"""What one process of the product holds, built once from the settings: the database and its job
queue, the blob store, the engine loader, the metrics, and the services built on them.

``atelier serve`` and ``atelier worker`` both start with :meth:`Services.open`; tests build one
on a temporary data dir. Opening brings the database schema up to date (Alembic, under a lock on
PostgreSQL so that several processes starting together do not race), so a fresh install needs
no separate ``atelier db upgrade``.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from atelier.config import Settings
from atelier.service.metrics import Metrics

if TYPE_CHECKING:
    from atelier.service.catalog import Catalog
    from atelier.service.decoding import DecodeBudget
    from atelier.service.engines import EngineLoader
    from atelier.service.instant import InstantService
    from atelier.service.mail import Mailer
    from atelier.store.blobs import BlobStore
    from atelier.store.queue import JobQueue

log = logging.getLogger(__name__)

#: Where the local blob store is served by the web app (see atelier.web.blobs).
BLOB_ROUTE = "/blobs"


def public_url_of(settings: Settings, *, host: str | None = None, port: int | None = None) -> str:
    """The address users reach the app at: ATELIER_PUBLIC_URL, else the one serve listens on."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = host or settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port if port is not None else settings.port}"


def secret_key_of(settings: Settings) -> bytes:
    """ATELIER_SECRET_KEY, else a random key made once and kept in <data dir>/secret.key (0600)."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = settings.data_dir / "secret.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    try:
        # O_EXCL: two processes starting at once agree on the one that got there first.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    log.info("made a new secret key in %s", path)
    return key


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision. Safe when several processes start at once: the
    migration environment takes an advisory lock on PostgreSQL, and SQLite's BEGIN IMMEDIATE
    makes writers take turns."""
    from atelier.store.migrations import upgrade

    upgrade(engine)


@dataclass
class Services:
    """The process's shared things. Thread-safe to share; close it once at the end."""

    settings: Settings
    engine: Engine
    queue: JobQueue
    blobs: BlobStore
    public_url: str
    secret: bytes
    metrics: Metrics = field(default_factory=Metrics)
    #: Paints commissions (see atelier.service.commission.job.CommissionPainter); None: the recipes.
    painter: Any = None
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        public_url: str | None = None,
        migrate_schema: bool = True,
    ) -> Services:
        """Connect to the database (migrating it unless told not to) and the blob store."""
        from atelier.store.blobs import blob_store_from_url
        from atelier.store.db import make_engine
        from atelier.store.errors import DatabaseDamagedError
        from atelier.store.integrity import advice, check_database_file, is_damage
        from atelier.store.queue import JobQueue

        assert settings.database_url is not None and settings.storage_url is not None
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = (public_url or public_url_of(settings)).rstrip("/")
        secret = secret_key_of(settings)
        check_database_file(settings.database_url)
        engine = make_engine(settings.database_url)
        if migrate_schema:
            try:
                migrate(engine)
            except Exception as exc:
                if is_damage(exc):
                    engine.dispose()
                    raise DatabaseDamagedError(advice(settings.database_url, str(getattr(exc, "orig", exc)))) from None
                raise
        blobs = blob_store_from_url(
            settings.storage_url,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            min_free_bytes=settings.storage_min_free_mb * 2**20,
            signing_key=secret,
            public_url=url + BLOB_ROUTE,
        )
        # Other processes find new jobs by LISTEN (PostgreSQL) or polling every second (SQLite).
        queue = JobQueue(engine, lease_seconds=settings.lease_seconds, poll_interval=1.0)
        services = cls(settings=settings, engine=engine, queue=queue, blobs=blobs, public_url=url, secret=secret)
        services.metrics.watch_queue(queue.stats)
        return services

    def _once(self, name: str, make: Any) -> Any:
        # cached_property alone lets two threads both build the thing on first use (two model
        # threads, two engine caches); building under a lock and storing where cached_property
        # looks first makes it once.
        with self._lock:
            if name not in self.__dict__:
                self.__dict__[name] = make()
            return self.__dict__[name]

    @cached_property
    def loader(self) -> EngineLoader:
        """Engines, loaded on first use and kept."""
        from atelier.art.blocks.devices import resolve_device
        from atelier.service.engines import EngineLoader

        return self._once(
            "loader", lambda: EngineLoader(models_dir=self.settings.models_path, device=resolve_device(self.settings.device))
        )

    @cached_property
    def decode_budget(self) -> DecodeBudget:
        """The memory budget every decode of a user's picture in this process takes from."""
        from atelier.service.decoding import DecodeBudget

        settings = self.settings
        return self._once("decode_budget", lambda: DecodeBudget(settings.decode_memory_mb * 2**20, wait_seconds=settings.decode_wait_seconds))

    @cached_property
    def catalog(self) -> Catalog:
        """The styles users can pick: filters and the hand-picked catalog."""
        from atelier.service.catalog import Catalog

        return self._once("catalog", lambda: Catalog(self.settings.styles_path, models_dir=self.settings.models_path))

    @cached_property
    def instant(self) -> InstantService:
        """Instant stylization with caches and micro-batching (its model thread starts on use)."""
        from atelier.service.instant import InstantService

        return self._once("instant", lambda: InstantService.from_settings(self.loader, self.settings, metrics=self.metrics))

    @cached_property
    def mailer(self) -> Mailer:
        """Mail: queued in the outbox, sent by ``mail.send`` jobs (SMTP or the outbox folder)."""
        from atelier.service.mail import Mailer

        return self._once("mailer", lambda: Mailer.from_settings(self.settings, metrics=self.metrics))

    @property
    def outbox_dir(self) -> Path:
        return self.settings.data_dir / "outbox"

    def close(self) -> None:
        """Stop the model thread, close the queue's listener and the connections."""
        instant = self.__dict__.get("instant")
        if instant is not None:
            instant.close()
        self.queue.close()
        self.blobs.close()
        self.engine.dispose()
