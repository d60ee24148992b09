"""Faces kept readable in the product's pictures: the policy around :mod:`atelier.art.blocks.faces`.

Every path that paints a photo (``atelier render``, the instant API, the commission) takes a
``faces`` option: True (the default) finds the faces and paints them finer, False paints the
picture as a whole, a :class:`~atelier.art.blocks.faces.Faces` gives them (a pet's face marked by
hand: the detector finds people and cats, not dogs). Where OpenCV's cascades are not installed
the picture is painted as a whole and the log says so once: a missing extra must not refuse a
picture that paints fine without it.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, TypeAlias

from PIL import Image

from atelier.art.blocks.faces import Faces, PaintFn, detect_faces, detector_available, repaint_faces

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FacesOption: TypeAlias = bool | Faces

_warned = threading.Event()


def find_faces(photo: Image.Image | torch.Tensor, option: FacesOption = True) -> Faces | None:
    """The faces to paint finer in ``photo``, or None for none (off, none found, no detector)."""
    if isinstance(option, Faces):
        return option or None
    if not option:
        return None
    if not detector_available():
        if not _warned.is_set():
            _warned.set()
            log.warning(
                "faces are painted like the rest of the picture: OpenCV's face cascades are not "
                "installed (pip install 'opencv-python-headless>=4.9,<5')"
            )
        return None
    faces = detect_faces(photo)
    if faces:
        log.debug("faces: %d found (%s)", len(faces), ", ".join(str(f.as_tuple()) for f in faces.faces))
    return faces or None


def paint_faces_finer(
    photo: torch.Tensor, painting: torch.Tensor, faces: Faces | None, paint: PaintFn
) -> torch.Tensor:
    """``painting`` (N, 3, H, W) with the faces of its photo painted again finer by ``paint``;
    unchanged when ``faces`` is None. A batch shares one ``faces`` only when N is 1."""
    if faces is None:
        return painting
    if photo.shape[0] != 1:
        raise ValueError("faces are painted finer one photo at a time")
    import torch

    with torch.inference_mode():
        return repaint_faces(photo, painting, faces, paint)
