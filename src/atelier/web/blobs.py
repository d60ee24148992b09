"""The local blob store over HTTP, so that the browser code is the same as with S3.

``GET /blobs/<key>?expires=..&signature=..`` serves a blob behind a link made by
:meth:`LocalBlobStore.presigned_get`; ``POST /blobs`` takes a direct upload made with
:meth:`LocalBlobStore.presigned_post`, checked against its signed policy. With S3 storage these
routes answer 404: links and uploads go to the bucket itself.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from atelier.service.context import BLOB_ROUTE, Services
from atelier.service.uploads import awaits_direct_upload
from atelier.store.blobs import LocalBlobStore
from atelier.store.errors import PolicyError
from atelier.web.deps import services_of
from atelier.web.errors import ApiError

log = logging.getLogger(__name__)

router = APIRouter(prefix=BLOB_ROUTE, include_in_schema=False)
ServicesDep = Annotated[Services, Depends(services_of)]


def _local(services: Services) -> LocalBlobStore:
    if not isinstance(services.blobs, LocalBlobStore):
        raise ApiError(404, "not_found", "not found")
    return services.blobs


@router.get("/{key:path}")
def get_blob(services: ServicesDep, key: str, expires: str = "", signature: str = "", filename: str | None = None) -> Response:
    store = _local(services)
    if not store.verify_get(key, expires, signature, filename=filename):
        raise ApiError(403, "forbidden", "this link is not valid or has expired")
    path = store.path(key)
    if not path.is_file():
        raise ApiError(404, "not_found", "not found")
    info = store.stat(key)
    return FileResponse(
        path,
        media_type=info.content_type or "application/octet-stream",
        filename=filename,
        headers={"Cache-Control": "private, max-age=300"},
    )


@router.post("")
async def post_blob(services: ServicesDep, request: Request) -> Response:
    store = _local(services)
    limit = max(services.settings.max_upload_bytes, services.settings.max_video_bytes)
    async with request.form(max_files=1, max_fields=20, max_part_size=limit + 1) as form:
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "invalid_request", "the form has no file")
        data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "too_large", "the file is too big")
    # One upload per policy: the key must be one an unconfirmed upload waits for (the store
    # itself refuses a second file under it before confirmation).
    if not await run_in_threadpool(awaits_direct_upload, services, fields.get("key", "")):
        raise PolicyError("this upload link is not valid any more (it has been used already, or is unknown); ask for a new one")
    await run_in_threadpool(store.accept_post, fields, data)
    # S3 answers 204 No Content by default; so do we.
    return Response(status_code=204)
