"""``/api/v1/admin/jobs``: the admin page's queue verbs as JSON, for scripts and dashboards.

Authorised by ``Authorization: Bearer <ATELIER_ADMIN_TOKEN>`` alone (no cookie, so no CSRF to
guard against); like /admin it does not exist (404) while no token is set. Every token is
counted against the same per-address limit as /admin sign-ins before it is compared, and
refunded when right (ATELIER_RATE_LIMIT_ADMIN_LOGINS_PER_IP), so it cannot be guessed at the
API's speed and a script with the right token is never refused.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from atelier.service import jobs
from atelier.service.context import Services
from atelier.web.deps import services_of
from atelier.web.errors import ApiError
from atelier.web.admin import LOGIN_SCOPE, bearer_ok
from atelier.web.security import client_ip, rate_limit

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/admin/jobs", tags=["operator"])
ServicesDep = Annotated[Services, Depends(services_of)]


async def operator(request: Request, services: ServicesDep) -> None:
    """The bearer token is the admin token, else 401; 404 while none is set. Counted and
    logged as /admin counts a bearer token (:func:`atelier.web.admin.bearer_ok`)."""
    if not services.settings.admin_token:
        raise ApiError(404, "not_found", "not found")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and await bearer_ok(services, request, header[7:].strip()):
        return
    if not header.lower().startswith("bearer "):
        # No token at all: counted like a wrong one, so that probing without one is limited too.
        await rate_limit(request, LOGIN_SCOPE, "ip", client_ip(request), services.settings.rate_limit_admin_logins_per_ip)
    raise ApiError(
        401, "unauthorized", "send Authorization: Bearer <ATELIER_ADMIN_TOKEN>", headers={"WWW-Authenticate": "Bearer"}
    )


OperatorDep = Depends(operator)


def _refused(exc: jobs.JobControlError) -> ApiError:
    status = {"not_found": 404, "conflict": 409, "bad_request": 422}.get(exc.code, 422)
    return ApiError(status, exc.code, str(exc))


async def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await run_in_threadpool(function, *args, **kwargs)
    except jobs.JobControlError as exc:
        raise _refused(exc) from None


class PriorityIn(BaseModel):
    priority: int = Field(description=f"Higher runs first; {jobs.PRIORITY_RANGE[0]}..{jobs.PRIORITY_RANGE[1]}.")


@router.get("", dependencies=[OperatorDep], summary="List jobs, newest first")
async def list_jobs(
    services: ServicesDep,
    status: Annotated[list[str] | None, Query(description="Only jobs of these statuses (repeat the parameter).")] = None,
    kind: Annotated[list[str] | None, Query(description="Only jobs of these kinds (repeat the parameter).")] = None,
    limit: Annotated[int, Query(description=f"At most this many (1..{jobs.MAX_LIST}).")] = 50,
    before: Annotated[int | None, Query(description="Only jobs older than this id (the next page).")] = None,
) -> dict[str, Any]:
    views = await _call(jobs.list_jobs, services, statuses=status, kinds=kind, limit=limit, before_id=before)
    items = [v.public() for v in views]
    return {"jobs": items, "next_before": items[-1]["id"] if len(items) == limit else None}


@router.get("/{job_id}", dependencies=[OperatorDep], summary="One job, with its payload and result")
async def show_job(services: ServicesDep, job_id: int) -> dict[str, Any]:
    return (await _call(jobs.show_job, services, job_id)).public(full=True)


@router.post("/{job_id}/cancel", dependencies=[OperatorDep], summary="Cancel a queued or running job")
async def cancel_job(services: ServicesDep, job_id: int) -> dict[str, Any]:
    return (await _call(jobs.cancel_job, services, job_id)).public(full=True)


@router.post("/{job_id}/retry", dependencies=[OperatorDep], summary="Queue a failed, dead or cancelled job again")
async def retry_job(services: ServicesDep, job_id: int) -> dict[str, Any]:
    return (await _call(jobs.retry_job, services, job_id)).public(full=True)


@router.post("/{job_id}/priority", dependencies=[OperatorDep], summary="Change a waiting job's priority")
async def set_priority(services: ServicesDep, job_id: int, body: PriorityIn) -> dict[str, Any]:
    return (await _call(jobs.set_priority, services, job_id, body.priority)).public(full=True)
