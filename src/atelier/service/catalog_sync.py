"""The style catalog (and optionally the model weights) kept in the blob store, so that every
machine of a deployment paints the same styles without copying folders by hand.

* ``atelier styles add|import|download`` publish what they wrote (:func:`publish_styles`); so
  does ``atelier styles publish``. ``atelier models publish`` puts the weights there.
* Every ``atelier serve`` and ``atelier worker`` syncs its ATELIER_STYLES_DIR at start
  (:func:`sync_at_start`) and then looks for changes every ATELIER_CATALOG_SYNC_SECONDS
  (:func:`start_catalog_watcher`): one listing; only a style whose manifest changed is read,
  and only files whose sha256 differ are downloaded (:mod:`atelier.store.mirror`).
* A job for a style this machine lacks syncs at once (:func:`require_style`); if the style is
  still not here it *waits*: the job goes back to the queue for a few seconds without spending
  an attempt (:class:`~atelier.service.worker.JobDeferred`), instead of failing for good.
  Only a style that stays absent from the store itself for :data:`UNPUBLISHED_WAIT` is
  refused (it was removed, or never published).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from atelier.config import Settings
from atelier.store.blobs import BlobStore
from atelier.store.db import utcnow
from atelier.store.mirror import CATALOG_PREFIX, MODELS_PREFIX, BundleMirror, SyncReport

if TYPE_CHECKING:
    from atelier.service.catalog import StyleEntry
    from atelier.service.context import Services

log = logging.getLogger(__name__)

#: How long a job waits for a style the store does not have (a publish still uploading).
UNPUBLISHED_WAIT = timedelta(minutes=10)
#: How long a job waits for a style the store has but this machine cannot fetch (store trouble).
PUBLISHED_WAIT = timedelta(hours=24)
#: Wait between two looks of a waiting job (it grows with the job's age, up to the largest).
DEFER_SECONDS = (5.0, 60.0)

_sync_lock = threading.Lock()


def catalog_sync_on(settings: Settings) -> bool:
    """Whether the catalog lives in the blob store (ATELIER_CATALOG_SYNC; auto: with S3)."""
    if settings.catalog_sync == "auto":
        return (settings.storage_url or "").startswith("s3://")
    return settings.catalog_sync == "on"


def catalog_mirror(blobs: BlobStore, settings: Settings) -> BundleMirror:
    return BundleMirror(blobs, CATALOG_PREFIX, settings.styles_path)


def models_mirror(blobs: BlobStore, settings: Settings) -> BundleMirror:
    return BundleMirror(blobs, MODELS_PREFIX, settings.models_path)


def publish_styles(blobs: BlobStore, settings: Settings, names: list[str] | None = None) -> list[str]:
    """Publish the named styles of ATELIER_STYLES_DIR (default: every installed one); their names."""
    from atelier.install.styles import load_catalog

    mirror = catalog_mirror(blobs, settings)
    styles = {s.name: s for s in load_catalog(settings.styles_path)}
    chosen = names if names is not None else sorted(styles)
    missing = [n for n in chosen if n not in styles]
    if missing:
        raise ValueError(f"not in {settings.styles_path} with its painting: {', '.join(missing)}")
    for name in chosen:
        mirror.publish(name, styles[name].folder)
    return list(chosen)


def publish_models(blobs: BlobStore, settings: Settings) -> list[str]:
    """Publish every model family folder of ATELIER_MODELS_DIR; their names."""
    mirror = models_mirror(blobs, settings)
    folders = sorted(p for p in settings.models_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        mirror.publish(folder.name, folder)
    return [f.name for f in folders]


def sync_catalog(services: Services) -> SyncReport:
    """Bring this machine's catalog in line with the store; the catalog is reloaded if it changed."""
    with _sync_lock:
        report = catalog_mirror(services.blobs, services.settings).sync()
    if report.changed:
        services.catalog.reload()
    return report


def sync_models(services: Services) -> SyncReport:
    with _sync_lock:
        return models_mirror(services.blobs, services.settings).sync()


def sync_at_start(services: Services) -> None:
    """What a process does before it takes work: sync the catalog (and weights when asked).
    A store that cannot be reached now is logged; the watcher tries again."""
    settings = services.settings
    if settings.sync_models:
        try:
            report = sync_models(services)
            log.info("model weights: %d families here, %d bytes fetched", len(report.added + report.updated + report.unchanged), report.bytes_downloaded)
        except Exception as exc:  # noqa: BLE001 - the store may be away: start anyway
            log.warning("model weights not synced at start: %s", exc)
    if catalog_sync_on(settings):
        try:
            report = sync_catalog(services)
            log.info("catalog: %d styles from the store, %d bytes fetched", len(report.added + report.updated + report.unchanged), report.bytes_downloaded)
        except Exception as exc:  # noqa: BLE001
            log.warning("catalog not synced at start: %s", exc)


def start_catalog_watcher(services: Services, stop: threading.Event) -> threading.Thread | None:
    """A daemon thread that syncs the catalog every ATELIER_CATALOG_SYNC_SECONDS until ``stop``."""
    if not catalog_sync_on(services.settings):
        return None
    interval = services.settings.catalog_sync_seconds

    def watch() -> None:
        failing = False
        while not stop.wait(interval):
            try:
                sync_catalog(services)
                if failing:
                    log.warning("catalog sync works again")
                failing = False
            except Exception as exc:  # noqa: BLE001 - the store may be away: try again later
                # One line per outage, not one per interval.
                if not failing:
                    log.warning("catalog sync failed (will keep trying every %.0f s): %s", interval, exc)
                failing = True

    thread = threading.Thread(target=watch, name="catalog-sync", daemon=True)
    thread.start()
    return thread


def require_style(services: Services, name: str, *, since: datetime) -> StyleEntry | None:
    """The catalog entry of ``name`` for a job queued at ``since``. Syncs at once when this
    machine lacks it; if it is still missing, raises :class:`JobDeferred` to wait for it.
    None (the caller refuses the job for good) when there is no catalog sync, or the style has
    stayed out of the store long enough to be taken as removed."""
    from atelier.service.worker import JobDeferred

    entry = services.catalog.get(name)
    if entry is not None or not catalog_sync_on(services.settings):
        return entry
    published = False
    try:
        report = sync_catalog(services)
        published = name in report.added + report.updated + report.unchanged or name in report.failed
    except Exception as exc:  # noqa: BLE001 - the store is away: wait for it like for the style
        log.warning("catalog sync for style %r failed: %s", name, exc)
        published = True
    entry = services.catalog.get(name)
    if entry is not None:
        return entry
    age = utcnow() - since
    if age > (PUBLISHED_WAIT if published else UNPUBLISHED_WAIT):
        return None
    low, high = DEFER_SECONDS
    delay = min(high, max(low, age.total_seconds() / 10))
    where = "is in the store but not synced here yet" if published else "is not in the store (yet)"
    raise JobDeferred(f"style {name!r} {where}", delay_seconds=delay)

