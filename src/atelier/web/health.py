"""Liveness, readiness, Prometheus metrics and the figures at /api/v1/stats."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from atelier.service.context import Services
from atelier.service.metrics import CONTENT_TYPE
from atelier.store.errors import StorageFullError
from atelier.store.integrity import damage_of, is_damage, ping
from atelier.web.deps import services_of

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])
ServicesDep = Annotated[Services, Depends(services_of)]

#: Weights the instant journey cannot do without (the default engine and the filters).
REQUIRED_MODELS: tuple[str, ...] = ("microast", "filter-candy")


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def readiness(services: Services) -> tuple[bool, dict[str, Any]]:
    """Whether this process can serve: the database answers, is migrated and whole (a SQLite
    file's quick_check, reused for a minute), the blob store answers and has room, the weights
    of the default engines are installed."""
    from atelier.install import models
    from atelier.store.migrations import is_up_to_date

    checks: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        ping(services.engine)
        damage = damage_of(services.engine)
        if damage is not None:
            checks["database"] = f"damaged: {damage} (restore the file from a backup; `atelier db check` shows what is wrong)"
        else:
            checks["database"] = "ok" if is_up_to_date(services.engine) else "schema is not up to date (run `atelier db upgrade`)"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        if is_damage(exc):
            checks["database"] = f"damaged: {str(getattr(exc, 'orig', exc)).splitlines()[0]} (`atelier db check` shows what is wrong)"
        else:
            checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        services.blobs.probe()
        checks["storage"] = "ok"
    except StorageFullError as exc:
        checks["storage"] = f"full: {exc}"
    except Exception as exc:  # noqa: BLE001
        checks["storage"] = f"unreachable: {type(exc).__name__}"
    missing = [name for name in REQUIRED_MODELS if models.status(name, models_dir=services.settings.models_path).missing]
    checks["weights"] = "ok" if not missing else f"missing: {', '.join(missing)} ({models.fix_command(missing[0])})"
    checks["seconds"] = round(time.perf_counter() - started, 4)
    ok = all(checks[k] == "ok" for k in ("database", "storage", "weights"))
    return ok, checks


@router.get("/readyz", summary="The process can serve requests")
def readyz(services: ServicesDep) -> JSONResponse:
    ok, checks = readiness(services)
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": "10"},
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE)


@router.get("/api/v1/stats", summary="Latency, batching, caches, queue and workers")
def stats(services: ServicesDep) -> dict[str, Any]:
    """The running average latency of the last 64 stylize calls, batch sizes, cache hits, the
    queue by status and the workers seen in the last minute."""
    queue = services.queue.stats()
    workers = services.queue.workers(seen_within=timedelta(minutes=1))
    instant = services.__dict__.get("instant")
    return {
        "stylize": instant.stats() if instant is not None else {"calls": 0},
        "queue": {
            "by_status": queue.by_status(),
            "by_kind": queue.counts,
            "oldest_queued_seconds": queue.oldest_queued_age,
            "expired_leases": queue.expired_leases,
        },
        "workers": {"active": len(workers), "busy": sum(1 for w in workers if w.current_job_id is not None)},
    }
