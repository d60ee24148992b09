"""Faces of people and cats in a photo, a soft mask of them, and faces painted finer.

Style transfer paints a face like any other texture: at 512 px a face of 60 px gets a handful
of strokes and loses its eyes, and a filter can put a bullseye under one. Three parts:

* :func:`detect_faces` -- where the faces and eyes are (boxes);
* :meth:`Faces.mask` -- a soft (H, W) map, 1 on the eyes, high on the face and fading to 0 a
  little outside it (what the engines' masks and content-weight maps take);
* :func:`repaint_faces` -- each face painted again at a higher resolution by the same engine
  and blended in with the mask, so it gets strokes at its own scale. Measured on MicroAST
  (note of issue 15): the eyes keep their edges (gradient correlation with the photo inside
  the eyes 0.31 -> 0.82 on the dog, 0.46 -> 0.58 on the portrait) and stay painted. Tried and
  dropped: a weaker style on the face through MicroAST's mask (its "keep the photo" region is
  MicroAST's blurry reconstruction, normalised by the face's own statistics -- the dog's face
  became brown mush, its eyes' correlation fell to 0.08).

The detector is OpenCV's Viola-Jones cascades, the XML files that ship inside the
``opencv-python-headless`` wheel (``cv2.data.haarcascades``); nothing is downloaded at run time.
Chosen after trying what the registries carry here (in the note of issue 15): OpenCV 5 wheels no
longer have cascades nor any face model; YuNet (``cv2.FaceDetectorYN``) needs an ONNX file that
no wheel ships; mediapipe 1.x wheels carry no models (its Tasks API downloads them) and 0.10's
legacy BlazeFace files come with numpy<2, jax and a non-headless OpenCV.

* people: ``haarcascade_frontalface_alt2``, each face confirmed by ``_default`` around it (on
  the 20 photos of the test set and a group picture: every face of the portraits, 6 of the 8
  small faces of the group, no false face); optionally (``profiles=True``, 2x the time)
  ``haarcascade_profileface`` on the photo and its mirror image (the cascade knows one side
  only), kept where a frontal box or an eye confirms it -- profile alone fires on hair;
* cats: ``haarcascade_frontalcatface_extended`` (the non-extended one fires on architecture);
* eyes: ``haarcascade_eye`` inside the upper part of each face, on the face scaled to 160 px,
  at most two; where none is found they are placed where a frontal face has them.

Dogs: no cascade or bundled model finds them (the cat cascades do not fire on the dog of the
test photos at any setting). A caller that knows where a pet's face is passes ``boxes`` to
:func:`faces_from_boxes` and gets the same mask; the product's default stays detection only.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Literal, TypeAlias

import sys
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from atelier.art.errors import ArtError

if TYPE_CHECKING:
    import torch

# torch is imported by the functions that make or paint tensors, not with the module: the
# detection is OpenCV and numpy only, and `atelier render` runs it in a helper process while the
# main one imports torch (atelier.cli.faces_ahead).

log = logging.getLogger(__name__)

Kind: TypeAlias = Literal["person", "cat", "pet", "eye"]
ImageLike: TypeAlias = "Image.Image | torch.Tensor"

#: Longest side the photo is scaled to for detection: the cascades' 20-24 px windows then find
#: faces down to about 3 % of the picture's longest side. Measured on the 20 photos of the
#: test set: 768 and 1024 found false faces (the stone of a doorway, a building's windows, a
#: harbour's reflections) at any neighbour count, and cost 1.4x and 2.5x the time.
DETECT_SIZE = 640
#: Smaller pictures are scaled up to this longest side first (a 128 px portrait's face is
#: below the cascades' window otherwise).
MIN_DETECT_SIZE = 512
#: Side the face is scaled to before looking for its eyes (eyes then span 25-40 px).
EYE_SEARCH_SIZE = 160

_CASCADES = {
    "frontal": "haarcascade_frontalface_alt2.xml",
    "check": "haarcascade_frontalface_default.xml",
    "profile": "haarcascade_profileface.xml",
    "cat": "haarcascade_frontalcatface_extended.xml",
    "eye": "haarcascade_eye.xml",
}


class FaceDetectorMissingError(ArtError):
    """OpenCV 4 with its cascades is not installed (a base dependency; 5.x has no cascades)."""


@dataclass(frozen=True, slots=True)
class Box:
    """A rectangle in pixels of the image it was found in: left, top, width, height."""

    x: float
    y: float
    width: float
    height: float
    kind: Kind = "person"
    #: Eyes placed by the face's geometry, not found by the eye detector.
    estimated: bool = False

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.width / 2, self.y + self.height / 2

    @property
    def area(self) -> float:
        return self.width * self.height

    def scaled(self, sx: float, sy: float | None = None) -> Box:
        sy = sx if sy is None else sy
        return replace(self, x=self.x * sx, y=self.y * sy, width=self.width * sx, height=self.height * sy)

    def contains(self, x: float, y: float) -> bool:
        return self.x <= x <= self.x + self.width and self.y <= y <= self.y + self.height

    def iou(self, other: Box) -> float:
        left, top = max(self.x, other.x), max(self.y, other.y)
        right = min(self.x + self.width, other.x + other.width)
        bottom = min(self.y + self.height, other.y + other.height)
        inter = max(0.0, right - left) * max(0.0, bottom - top)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def as_tuple(self) -> tuple[int, int, int, int]:
        return round(self.x), round(self.y), round(self.width), round(self.height)


@dataclass(frozen=True)
class Faces:
    """The faces and eyes found in a ``width`` x ``height`` picture."""

    width: int
    height: int
    faces: tuple[Box, ...] = ()
    eyes: tuple[Box, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.faces)

    def __len__(self) -> int:
        return len(self.faces)

    def resized(self, width: int, height: int) -> Faces:
        """The same faces in the same picture scaled to ``width`` x ``height``."""
        sx, sy = width / self.width, height / self.height
        return Faces(
            width, height,
            tuple(f.scaled(sx, sy) for f in self.faces),
            tuple(e.scaled(sx, sy) for e in self.eyes),
        )

    def mask(
        self,
        *,
        size: tuple[int, int] | None = None,
        face: float = 1.0,
        eye: float = 1.0,
        feather: float = 0.35,
    ) -> torch.Tensor:
        """A soft (H, W) float map in 0..1: ``face`` on the faces, ``eye`` on the eyes, 0 away
        from them. ``size`` is (width, height), default the picture's own.

        Each face is an ellipse a little bigger than its box (a cascade's box runs from the
        eyebrows to the mouth: the forehead and chin are added), each eye a small ellipse; the
        edge falls off smoothly over ``feather`` of the radius, so a painting made with it has
        no seam. Overlaps take the maximum.
        """
        import torch

        if not 0.0 <= face <= 1.0 or not 0.0 <= eye <= 1.0:
            raise ArtError(f"face and eye mask values must be in 0..1, got {face} and {eye}")
        if not 0.0 < feather <= 1.0:
            raise ArtError(f"feather must be in (0, 1], got {feather}")
        width, height = size or (self.width, self.height)
        out = torch.zeros(height, width)
        if not self.faces:
            return out
        sx, sy = width / self.width, height / self.height
        ys = torch.arange(height, dtype=torch.float32).add_(0.5).view(-1, 1)
        xs = torch.arange(width, dtype=torch.float32).add_(0.5).view(1, -1)
        for box in self.faces:
            b = box.scaled(sx, sy)
            cx, cy = b.center
            # Haar boxes are about the inner face; pets' boxes include the ears already.
            grow_x, grow_y = (0.62, 0.78) if box.kind == "person" else (0.58, 0.62)
            shift = 0.06 * b.height if box.kind == "person" else 0.0
            _paint_ellipse(out, xs, ys, cx, cy + shift, b.width * grow_x, b.height * grow_y, feather, face)
        for box in self.eyes:
            b = box.scaled(sx, sy)
            cx, cy = b.center
            _paint_ellipse(out, xs, ys, cx, cy, b.width * 0.75, b.height * 0.6, 0.5, eye)
        return out


def _paint_ellipse(
    out: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor,
    cx: float, cy: float, rx: float, ry: float, feather: float, value: float,
) -> None:
    if rx <= 0 or ry <= 0 or value <= 0:
        return
    import torch

    # Only the ellipse's bounding rows/columns are computed: a group photo has many faces.
    top, bottom = max(0, int(cy - ry) - 1), min(out.shape[0], int(math.ceil(cy + ry)) + 1)
    left, right = max(0, int(cx - rx) - 1), min(out.shape[1], int(math.ceil(cx + rx)) + 1)
    if top >= bottom or left >= right:
        return
    dx = (xs[:, left:right] - cx) / rx
    dy = (ys[top:bottom] - cy) / ry
    radius = (dx.square() + dy.square()).sqrt()
    # 1 inside 1 - feather, smoothstep down to 0 at the ellipse's edge.
    t = ((1.0 - radius) / feather).clamp_(0.0, 1.0)
    weight = t * t * (3.0 - 2.0 * t) * value
    region = out[top:bottom, left:right]
    torch.maximum(region, weight, out=region)


# ----------------------------------------------------------------------------- detection

_lock = threading.Lock()


@cache
def _cascade(name: str):  # type: ignore[no-untyped-def]
    cv2 = _cv2()
    path = cv2.data.haarcascades + _CASCADES[name]
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise FaceDetectorMissingError(f"OpenCV could not read its cascade {path}")
    return classifier


def _cv2():  # type: ignore[no-untyped-def]
    try:
        import cv2
    except ImportError as exc:
        raise FaceDetectorMissingError(
            "face detection needs OpenCV: pip install 'opencv-python-headless>=4.9,<5'"
        ) from exc
    if not hasattr(cv2, "CascadeClassifier") or not getattr(getattr(cv2, "data", None), "haarcascades", ""):
        raise FaceDetectorMissingError(
            f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 dropped them): "
            "pip install 'opencv-python-headless>=4.9,<5'"
        )
    return cv2


def detector_available() -> bool:
    """Whether :func:`detect_faces` can run here (OpenCV 4 with its cascades installed)."""
    try:
        _cascade("frontal")
    except FaceDetectorMissingError:
        return False
    return True


def _grey_array(image: ImageLike) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("L"))
    torch = sys.modules.get("torch")  # a tensor means torch is imported already
    if torch is None or not isinstance(image, torch.Tensor):
        raise TypeError("detect_faces takes a PIL image or an RGB tensor")
    t = image.detach()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ArtError(f"detect_faces takes one picture, got a batch of {t.shape[0]}")
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise ArtError(f"detect_faces takes an RGB picture (3, H, W), got {tuple(image.shape)}")
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(3, 1, 1)
    grey = (t.float().cpu() * weights).sum(0).clamp_(0, 1).mul_(255).round_()
    return grey.to(torch.uint8).numpy()


def detect_faces(
    image: ImageLike,
    *,
    people: bool = True,
    cats: bool = True,
    eyes: bool = True,
    profiles: bool = False,
    detect_size: int = DETECT_SIZE,
    min_face: int = 20,
) -> Faces:
    """Find the faces (people, cats) and their eyes in a picture.

    ``image`` is a PIL image or an RGB tensor (3, H, W) / (1, 3, H, W) in 0..1. The picture is
    scaled so its longest side is at most ``detect_size`` and faces smaller than ``min_face``
    pixels at that scale are not looked for. Boxes come back in the pixels of ``image``.
    A picture with no face gives ``Faces`` that is false and whose mask is all zeros.
    """
    grey = _grey_array(image)
    height, width = grey.shape
    if min(height, width) < 8:
        return Faces(width, height)
    cv2 = _cv2()
    longest = max(height, width)
    scale = min(detect_size, max(longest, MIN_DETECT_SIZE)) / longest
    small = grey if scale == 1.0 else cv2.resize(
        grey, (max(1, round(width * scale)), max(1, round(height * scale))),
        # Bicubic enlarging rings around a small JPEG's blocks: the 128 px portrait's face was lost.
        interpolation=cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR,
    )
    # Histogram equalisation makes the cascades see dim and washed-out faces; CLAHE instead
    # brightened the background texture into false faces.
    small = cv2.equalizeHist(small)
    found: list[Box] = []
    with _lock:  # a CascadeClassifier is not safe to share between threads
        if people:
            found += _people(small, min_face, profiles=profiles)
        if cats:
            found += [
                Box(*map(float, r), kind="cat")
                for r in _detect(_cascade("cat"), small, min_face, neighbours=5)
            ]
        faces = _merge(found)
        eye_boxes = _eyes(small, faces) if eyes else []
    back = 1.0 / scale
    return Faces(
        width, height,
        tuple(f.scaled(back) for f in faces),
        tuple(e.scaled(back) for e in eye_boxes),
    )


def faces_from_boxes(
    width: int, height: int, boxes: Iterable[Sequence[float]], *, kind: Kind = "pet"
) -> Faces:
    """Faces given by hand (x, y, w, h in pixels of a ``width`` x ``height`` picture), with
    their eyes placed by geometry: for a pet's face the detector cannot find."""
    faces = []
    for box in boxes:
        x, y, w, h = (float(v) for v in box)
        if w <= 0 or h <= 0 or x + w <= 0 or y + h <= 0 or x >= width or y >= height:
            raise ArtError(f"the face box {tuple(box)} is not inside the {width}x{height} picture")
        faces.append(Box(x, y, w, h, kind=kind))
    return Faces(width, height, tuple(faces), tuple(e for f in faces for e in _geometric_eyes(f)))


def _detect(classifier, grey: np.ndarray, min_face: int, *, neighbours: int) -> list[tuple[int, ...]]:  # type: ignore[no-untyped-def]
    rects = classifier.detectMultiScale(
        grey, scaleFactor=1.1, minNeighbors=neighbours, minSize=(min_face, min_face)
    )
    return [tuple(int(v) for v in r) for r in rects] if len(rects) else []


def _people(grey: np.ndarray, min_face: int, *, profiles: bool) -> list[Box]:
    # A permissive pass of one cascade, each face confirmed by the other cascade around it: on
    # the test photos one cascade alone either missed faces of a group (six neighbours: 5 of 8)
    # or saw a face in a doorway's carved stone (five or fewer); the pair finds 6 of 8, no false.
    frontal = [
        Box(*map(float, r))
        for r in _detect(_cascade("frontal"), grey, min_face, neighbours=3)
        if _confirmed(grey, r)
    ]
    if not profiles:
        return frontal
    width = grey.shape[1]
    profile_cascade = _cascade("profile")
    profiles = [Box(*map(float, r)) for r in _detect(profile_cascade, grey, min_face, neighbours=5)]
    mirrored = np.ascontiguousarray(grey[:, ::-1])
    profiles += [
        Box(float(width - x - w), float(y), float(w), float(h))
        for x, y, w, h in _detect(profile_cascade, mirrored, min_face, neighbours=5)
    ]
    # A profile is kept only where something else says "face": a frontal box or an eye.
    confirmed = [
        p for p in profiles
        if any(p.iou(f) > 0.2 for f in frontal) or _eyes_in(grey, p)
    ]
    return frontal + confirmed


def _confirmed(grey: np.ndarray, rect: tuple[int, ...]) -> bool:
    x, y, w, h = rect
    margin = int(0.3 * w)
    x0, y0 = max(0, x - margin), max(0, y - margin)
    crop = grey[y0 : y + h + margin, x0 : x + w + margin]
    low, high = int(w * 0.6), int(w * 1.6)
    found = _cascade("check").detectMultiScale(
        crop, scaleFactor=1.1, minNeighbors=3, minSize=(low, low), maxSize=(high, high)
    )
    return len(found) > 0


def _merge(boxes: list[Box]) -> list[Box]:
    """One box per face: overlapping detections (of any cascade) are one face, the bigger
    detection's box kept (a frontal box before a profile of the same size)."""
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: b.area, reverse=True):
        cx, cy = box.center
        if any(box.iou(k) > 0.25 or k.contains(cx, cy) for k in kept):
            continue
        kept.append(box)
    return sorted(kept, key=lambda b: (b.y, b.x))


def _face_crop(grey: np.ndarray, face: Box) -> tuple[np.ndarray, float, int, int] | None:
    cv2 = _cv2()
    x0, y0 = max(0, int(face.x)), max(0, int(face.y))
    # The eyes lie in the upper 60 % of a frontal box.
    x1 = min(grey.shape[1], int(math.ceil(face.x + face.width)))
    y1 = min(grey.shape[0], int(math.ceil(face.y + face.height * 0.62)))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    zoom = EYE_SEARCH_SIZE / (x1 - x0)
    crop = cv2.resize(grey[y0:y1, x0:x1], None, fx=zoom, fy=zoom,
                      interpolation=cv2.INTER_CUBIC if zoom > 1 else cv2.INTER_AREA)
    return crop, zoom, x0, y0


def _eye_candidates(grey: np.ndarray, face: Box) -> list[Box]:
    found = _face_crop(grey, face)
    if found is None:
        return []
    crop, zoom, x0, y0 = found
    side = EYE_SEARCH_SIZE
    rects = _cascade("eye").detectMultiScale(
        crop, scaleFactor=1.05, minNeighbors=4, minSize=(side // 8, side // 8), maxSize=(side // 3, side // 3)
    )
    return [
        Box(x0 + x / zoom, y0 + y / zoom, w / zoom, h / zoom, kind="eye")
        for x, y, w, h in (rects if len(rects) else [])
    ]


def _eyes_in(grey: np.ndarray, face: Box) -> bool:
    return bool(_eye_candidates(grey, face))


def _eyes(grey: np.ndarray, faces: list[Box]) -> list[Box]:
    out: list[Box] = []
    for face in faces:
        if face.kind != "person":
            out += _geometric_eyes(face)
            continue
        candidates = sorted(_eye_candidates(grey, face), key=lambda b: b.area, reverse=True)
        chosen: list[Box] = []
        for eye in candidates:
            cx, cy = eye.center
            if cy > face.y + face.height * 0.6:  # nostrils and mouth corners look like eyes
                continue
            if any(eye.iou(c) > 0.1 or c.contains(cx, cy) for c in chosen):
                continue
            # Two eyes sit side by side: the second must be beside the first, not above it.
            if chosen and abs(chosen[0].center[0] - cx) < face.width * 0.2:
                continue
            chosen.append(eye)
            if len(chosen) == 2:
                break
        out += chosen or _geometric_eyes(face)
    return out


def _geometric_eyes(face: Box) -> list[Box]:
    """Where a frontal face's eyes are (the cascade's box: eyes at 38 % of its height, a
    quarter of its width in from each side); for pets, a third down the box."""
    w, h = face.width, face.height
    ey = face.y + h * (0.38 if face.kind == "person" else 0.36)
    size = w * 0.2
    return [
        Box(face.x + w * fx - size / 2, ey - size / 2, size, size, kind="eye", estimated=True)
        for fx in (0.3, 0.7)
    ]


# ----------------------------------------------------------------------------- painting faces finer

#: A face is painted again as if it were this many pixels across (see :func:`repaint_faces`):
#: at 512 px a pet's face of 60 px is painted at 4x, a portrait's of 280 px at 1.3x.
FACE_PAINT_SIZE = 384
#: Faces are painted at most this many times bigger (a tiny face would cost a lot for pixels
#: nobody sees) and not at all below MIN_ZOOM (the painting is already fine enough there).
MAX_ZOOM = 4.0
MIN_ZOOM = 1.25

PaintFn: TypeAlias = "Callable[[torch.Tensor], torch.Tensor]"


def repaint_faces(
    photo: torch.Tensor,
    painting: torch.Tensor,
    faces: Faces,
    paint: PaintFn,
    *,
    face_size: int = FACE_PAINT_SIZE,
    max_zoom: float = MAX_ZOOM,
) -> torch.Tensor:
    """``painting`` with each face painted again at a higher resolution and blended in.

    A style engine paints at a fixed scale of strokes: a small face gets a handful of strokes
    and its eyes are lost. Here each face (with a margin) is cut from ``photo``, enlarged so
    the face is about ``face_size`` pixels across, painted with ``paint`` (the same engine and
    style: any callable from a (1, 3, h, w) photo to its painting), shrunk back and blended into
    ``painting`` with the soft face mask. Only the enlarged painting's fine detail is used: its
    colours below the face's scale (a Gaussian of a twelfth of the face) are the whole
    painting's, so an engine that normalises a crop by its own statistics (AdaIN, MicroAST)
    leaves no colour seam. Away from the faces the painting is unchanged, bit for bit.

    ``photo`` and ``painting`` are (1, 3, H, W) in 0..1, the same size; ``faces`` are boxes in
    any size of the same picture. No face, or faces already big enough: ``painting`` returned.
    """
    import torch
    import torch.nn.functional as F

    if photo.dim() != 4 or photo.shape[0] != 1 or photo.shape[1] != 3:
        raise ArtError(f"repaint_faces takes one RGB photo (1, 3, H, W), got {tuple(photo.shape)}")
    if painting.shape != photo.shape:
        raise ArtError(
            f"the painting is {tuple(painting.shape)} but the photo {tuple(photo.shape)}; they must match"
        )
    height, width = photo.shape[-2:]
    if not faces:
        return painting
    faces = faces.resized(width, height)
    mask = faces.mask().to(painting.device)
    out = painting.clone()
    for face in faces.faces:
        side = max(face.width, face.height)
        zoom = min(max_zoom, face_size / side) if side > 0 else 0.0
        if zoom < MIN_ZOOM:
            continue
        margin = 0.45 * side  # the mask's ellipse reaches 0.62-0.78 of the box from its centre
        x0, y0 = int(max(0, face.x - margin)), int(max(0, face.y - margin))
        x1 = int(min(width, math.ceil(face.x + face.width + margin)))
        y1 = int(min(height, math.ceil(face.y + face.height + margin * 1.2)))
        if x1 - x0 < 8 or y1 - y0 < 8:
            continue
        crop = photo[..., y0:y1, x0:x1]
        big = F.interpolate(crop, scale_factor=zoom, mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
        painted = paint(big).to(painting.device, torch.float32)
        fine = F.interpolate(painted, size=crop.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
        region = out[..., y0:y1, x0:x1]
        sigma = max(1.0, side / 12)
        fine = (fine - _blur(fine, sigma) + _blur(region, sigma)).clamp_(0.0, 1.0)
        region.copy_(torch.lerp(region, fine, mask[y0:y1, x0:x1]))
    return out


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    radius = max(1, int(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-taps.square() / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    padded = F.pad(image, (radius,) * 4, mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
