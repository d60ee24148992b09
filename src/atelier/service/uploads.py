"""Photos, paintings and clips users send: checked, stored as blobs, recorded as upload rows.

An upload is referred to by its random id (``uploads.id``), never by a counter, so one user
cannot enumerate another's photos. Instant uploads are temporary (``atelier reconcile --fix``
removes them after ATELIER_TEMP_RETENTION_HOURS); a photo that becomes a commission is kept.

Two ways in: the bytes through the app (:func:`store_upload`), or straight from the browser to
the blob store with a presigned POST (:func:`presign_upload`), checked afterwards by
:func:`confirm_upload` -- the same checks, run on the stored blob.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from PIL import Image

from atelier.service.errors import REFUSALS, ServiceError
from atelier.art.blocks.images import UnsupportedImageError, decode_cost, decode_image, image_hash
from atelier.service.context import Services
from atelier.store.blobs import PresignedPost, new_key
from atelier.store.db import Upload, transaction, utcnow
from atelier.store.errors import BlobNotFoundError
from atelier.store.uploads import upload_at

log = logging.getLogger(__name__)

UploadKind = Literal["content", "style", "video"]
KINDS: tuple[str, ...] = ("content", "style", "video")

#: What the files' first bytes say they are, and the extension and type stored with them.
_IMAGE_SIGNATURES: tuple[tuple[bytes, int, str, str], ...] = (
    (b"\xff\xd8\xff", 0, ".jpg", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, ".png", "image/png"),
    (b"WEBP", 8, ".webp", "image/webp"),
    (b"GIF8", 0, ".gif", "image/gif"),
    (b"BM", 0, ".bmp", "image/bmp"),
    (b"II*\x00", 0, ".tif", "image/tiff"),
    (b"MM\x00*", 0, ".tif", "image/tiff"),
)
IMAGE_TYPES = frozenset(t for *_, t in _IMAGE_SIGNATURES)
VIDEO_TYPES = frozenset({"video/mp4", "video/quicktime", "video/webm", "video/x-matroska", "image/gif"})


class UploadError(ServiceError):
    """An upload that cannot be accepted or found (the message is for the user)."""


class UploadNotFoundError(UploadError):
    """No upload with that id (or it expired)."""


@dataclass(frozen=True)
class UploadInfo:
    """An upload as the API shows it (and the service uses it)."""

    id: str
    kind: str
    sha256: str
    content_type: str
    size: int
    width: int | None
    height: int | None
    blob_key: str
    confirmed: bool

    @classmethod
    def of(cls, row: Upload) -> UploadInfo:
        return cls(
            id=row.id,
            kind=row.kind,
            sha256=row.sha256,
            content_type=row.content_type,
            size=int(row.size),
            width=row.width,
            height=row.height,
            blob_key=row.blob_key,
            confirmed=bool(row.sha256),
        )

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "content_type": self.content_type,
            "size": self.size,
            "width": self.width,
            "height": self.height,
        }


def sniff_image(data: bytes) -> tuple[str, str] | None:
    """(extension, content type) of an image file from its first bytes, or None."""
    for magic, offset, ext, content_type in _IMAGE_SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            if ext == ".webp" and data[:4] != b"RIFF":
                continue
            return ext, content_type
    return None


def sniff_video(data: bytes) -> tuple[str, str] | None:
    """(extension, content type) of a video container from its first bytes, or None."""
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return (".mov", "video/quicktime") if brand == b"qt  " else (".mp4", "video/mp4")
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return ".webm", "video/webm"
    if data[:4] == b"GIF8":
        return ".gif", "image/gif"
    return None


def check_image(services: Services, data: bytes) -> tuple[Image.Image, str, str]:
    """Decode ``data`` with the limits; the image, its extension and content type."""
    image = decode_within_budget(services, data)
    sniffed = sniff_image(data)
    if sniffed is None:  # decode_image accepted it, so this cannot happen; keep a clear message
        raise UnsupportedImageError("not an image: send a JPEG, PNG, WebP, BMP, TIFF or GIF")
    return image, *sniffed


def check_video(services: Services, data: bytes) -> tuple[str, str]:
    """Check a clip's size and container; its extension and content type."""
    if len(data) > services.settings.max_video_bytes:
        limit = services.settings.max_video_bytes / (1024 * 1024)
        raise UploadError(f"the video is too big: at most {limit:.0f} MiB")
    if not data:
        raise UploadError("the file is empty")
    sniffed = sniff_video(data)
    if sniffed is None:
        raise UploadError("not a video: send an MP4, MOV, WebM or GIF clip")
    return sniffed


def store_upload(
    services: Services,
    data: bytes,
    *,
    kind: UploadKind = "content",
    temporary: bool = True,
) -> tuple[UploadInfo, Image.Image | None]:
    """Check and keep a file; returns the upload and, for images, the decoded picture (so the
    caller need not decode it again)."""
    if kind not in KINDS:
        raise UploadError(f"unknown upload kind {kind!r}; use one of {', '.join(KINDS)}")
    image: Image.Image | None = None
    if kind == "video":
        ext, content_type = check_video(services, data)
        width = height = None
    else:
        image, ext, content_type = check_image(services, data)
        width, height = image.size
    key = new_key("uploads", ext)
    services.blobs.put(key, data, content_type=content_type)
    retention = timedelta(hours=services.settings.temp_retention_hours)
    try:
        with transaction(services.engine) as session:
            row = Upload(
                kind=kind,
                blob_key=key,
                sha256=image_hash(data),
                content_type=content_type,
                size=len(data),
                width=width,
                height=height,
                temporary=temporary,
                expires_at=utcnow() + retention if temporary else None,
            )
            session.add(row)
            session.flush()
            info = UploadInfo.of(row)
    except Exception:
        # No row, no blob: otherwise the blob is an orphan until reconcile finds it.
        services.blobs.delete(key)
        raise
    log.info("stored %s upload %s (%d bytes, %s)", kind, info.id, info.size, content_type)
    return info, image


def get_upload(services: Services, upload_id: str) -> UploadInfo:
    """The upload with this id; :class:`UploadNotFoundError` if there is none."""
    if not upload_id or len(upload_id) > 64 or not upload_id.isalnum():
        raise UploadNotFoundError("no such upload (it may have expired; send the file again)")
    with transaction(services.engine, read_only=True) as session:
        row = session.get(Upload, upload_id)
        if row is None:
            raise UploadNotFoundError("no such upload (it may have expired; send the file again)")
        return UploadInfo.of(row)


def read_upload(services: Services, upload: UploadInfo) -> bytes:
    """The upload's bytes."""
    try:
        return services.blobs.read(upload.blob_key)
    except BlobNotFoundError:
        raise UploadNotFoundError("the file of this upload is gone; send it again") from None


def load_image(services: Services, upload: UploadInfo) -> Image.Image:
    """The upload decoded (with the limits, as when it was sent)."""
    return decode_within_budget(services, read_upload(services, upload))


def decode_within_budget(services: Services, data: bytes) -> Image.Image:
    """:func:`decode_image` with the limits, holding its estimated memory out of the process's
    decoding budget while it runs (:mod:`atelier.service.decoding`)."""
    settings = services.settings
    cost = decode_cost(data, max_pixels=settings.max_image_pixels)
    with services.decode_budget.reserve(cost):
        return decode_image(data, max_pixels=settings.max_image_pixels, max_bytes=settings.max_upload_bytes)


# ------------------------------------------------------------------------------------------------
# direct uploads


@dataclass(frozen=True)
class PresignedUpload:
    upload_id: str
    post: PresignedPost

    def public(self) -> dict[str, object]:
        return {
            "id": self.upload_id,
            "url": self.post.url,
            "fields": self.post.fields,
            "max_bytes": self.post.max_bytes,
            "expires_at": self.post.expires_at.isoformat(),
            "confirm_url": f"/api/v1/uploads/{self.upload_id}/confirm",
        }


_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif",
               "image/bmp": ".bmp", "image/tiff": ".tif", "video/mp4": ".mp4", "video/quicktime": ".mov",
               "video/webm": ".webm", "video/x-matroska": ".mkv"}


def presign_upload(
    services: Services, *, content_type: str, kind: UploadKind = "content", expires_in: int = 900
) -> PresignedUpload:
    """A presigned POST for one file, and the upload row it will become once confirmed.

    The row is recorded now (temporary, no checksum yet) so the key is known to be ours; a
    browser that never uploads leaves a row that reconcile removes after the retention time.
    """
    content_type = content_type.strip().lower()
    allowed = VIDEO_TYPES if kind == "video" else IMAGE_TYPES
    if content_type not in allowed:
        raise UploadError(f"cannot upload {content_type or 'this type'} as a {kind}; allowed: {', '.join(sorted(allowed))}")
    max_bytes = services.settings.max_video_bytes if kind == "video" else services.settings.max_upload_bytes
    key = new_key("uploads", _EXTENSIONS[content_type])
    post = services.blobs.presigned_post(key, content_type=content_type, max_bytes=max_bytes, expires_in=expires_in)
    with transaction(services.engine) as session:
        row = Upload(
            kind=kind,
            blob_key=key,
            sha256="",  # set by confirm_upload
            content_type=content_type,
            size=0,
            temporary=True,
            expires_at=utcnow() + timedelta(hours=services.settings.temp_retention_hours),
        )
        session.add(row)
        session.flush()
        upload_id = row.id
    return PresignedUpload(upload_id, post)


def confirm_upload(services: Services, upload_id: str) -> UploadInfo:
    """Check a file the browser put in the store itself, as if it had come through the app, and
    keep the checked bytes at a key of their own.

    The policy the browser used names the key it uploaded to, and S3 takes further uploads with
    it until it expires; so what was checked is written to a fresh key that no policy names, the
    row points there, and the policy's key is emptied (anything posted to it later is an orphan
    that ``atelier reconcile`` removes). Confirming again checks the kept file again -- still
    decodable, of the announced type, the same bytes -- rather than answering from the row.
    A file that fails its first check is deleted with its row."""
    upload = get_upload(services, upload_id)
    try:
        data = services.blobs.read(upload.blob_key)
    except BlobNotFoundError:
        if upload.confirmed:
            raise UploadNotFoundError("the file of this upload is gone; send it again") from None
        raise UploadError("nothing was uploaded for this id yet; send the file first") from None
    try:
        ext, width, height = _check_direct(services, upload, data)
        if upload.confirmed and image_hash(data) != upload.sha256:
            raise UploadError("the stored file is not the one that was checked; send it again")
    except REFUSALS:
        if upload.confirmed:
            # A kept file changed under its row (someone wrote to the store): refuse, and leave
            # the row to the artworks that may refer to it and to the operator.
            log.error("upload %s: its kept file %s no longer passes the checks", upload.id, upload.blob_key)
        else:
            services.blobs.delete(upload.blob_key)
            with transaction(services.engine) as session:
                row = session.get(Upload, upload_id)
                if row is not None:
                    session.delete(row)
        raise
    if upload.confirmed:
        return upload
    kept = new_key("uploads", ext)
    services.blobs.put(kept, data, content_type=upload.content_type)
    with transaction(services.engine) as session:
        row = session.get(Upload, upload_id)
        first = row is not None and not row.sha256
        if row is not None and first:
            row.blob_key = kept
            row.sha256 = image_hash(data)
            row.size = len(data)
            row.width, row.height = width, height
            session.flush()
        info = UploadInfo.of(row) if row is not None else None
    if not first:
        services.blobs.delete(kept)  # another confirmation got there first (or the row went)
        if info is None:
            raise UploadNotFoundError("no such upload")
        return info
    services.blobs.delete(upload.blob_key)
    assert info is not None
    return info


def _check_direct(services: Services, upload: UploadInfo, data: bytes) -> tuple[str, int | None, int | None]:
    """The checks of a direct upload: (extension, width, height)."""
    if upload.kind == "video":
        ext, _ = check_video(services, data)
        return ext, None, None
    image, ext, content_type = check_image(services, data)
    if content_type != upload.content_type:
        raise UploadError(f"the file is {content_type}, not the {upload.content_type} announced")
    return ext, *image.size


def direct_uploads(services: Services) -> bool:
    """Whether browsers should send files straight to the blob store: with S3 (then the bytes
    never pass through the web process). With local storage the store's upload endpoint is this
    app itself, so the page sends its files to /api/v1/uploads in one request instead."""
    from atelier.store.blobs import S3BlobStore

    return isinstance(services.blobs, S3BlobStore)


def awaits_direct_upload(services: Services, key: str) -> bool:
    """Whether ``key`` is where a presigned upload that is not confirmed yet goes: the local
    store's upload endpoint takes a file only then (after confirmation the row points at the
    kept copy, so the policy's key is no longer awaited and its fields are refused)."""
    with transaction(services.engine, read_only=True) as session:
        row = upload_at(session, key)
        return row is not None and not row.sha256
