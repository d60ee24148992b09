"""From what a request names -- an upload, a catalog or filter name -- to the photo and style
references the service paints (:mod:`atelier.service.refs`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

from atelier.service.errors import StyleChoiceError, UnknownStyleError
from atelier.service.refs import PhotoRef, StyleRef
from atelier.service.uploads import UploadError, UploadInfo, load_image

if TYPE_CHECKING:
    from atelier.service.context import Services


def photo_ref(services: Services, upload: UploadInfo, image: Image.Image | None = None) -> PhotoRef:
    """The photo of an upload; ``image`` is its decoded picture when the caller has it."""
    if upload.kind != "content" and upload.kind != "style":
        raise UploadError("this upload is not a photo")
    if upload.width is None or upload.height is None or not upload.sha256:
        raise UploadError("this upload has not been confirmed yet")

    def load() -> Image.Image:
        return image if image is not None else load_image(services, upload)

    return PhotoRef(key=upload.sha256, width=upload.width, height=upload.height, load=load)


def style_ref(
    services: Services,
    *,
    name: str | None = None,
    upload: UploadInfo | None = None,
    image: Image.Image | None = None,
) -> StyleRef:
    """A style by catalog or filter ``name``, or the painting of an ``upload``."""
    if name:
        entry = services.catalog.get(name)
        if entry is None:
            raise UnknownStyleError(f"unknown style {name!r}; GET /api/v1/styles lists them")
        if entry.kind == "filter":
            return StyleRef.of_filter(entry.name)
        return StyleRef(key=f"name:{entry.name}", load=entry.load_image)
    if upload is None:
        raise StyleChoiceError("choose a style: a style name, or your own painting")
    if not upload.sha256:
        raise StyleChoiceError("this painting has not been confirmed yet")

    def load() -> Image.Image:
        return image if image is not None else load_image(services, upload)

    return StyleRef(key=f"sha256:{upload.sha256}", load=load)
