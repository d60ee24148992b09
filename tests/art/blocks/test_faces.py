"""Faces: found where they are on real photos, nowhere on photos without one, and painted finer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from atelier.art.errors import ArtError
from atelier.art.blocks.faces import Box, Faces, detect_faces, faces_from_boxes, repaint_faces
from atelier.art.blocks.images import fit_longest, to_tensor

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def portraits(content_dir: Path, shared_dir: Path) -> dict[str, Image.Image]:
    more = shared_dir / "assets" / "images" / "content"
    return {
        "brad_pitt": Image.open(content_dir / "brad_pitt.jpg").convert("RGB"),
        "avril": Image.open(more / "avril.jpg").convert("RGB"),
        "blonde_girl": Image.open(more / "blonde_girl.jpg").convert("RGB"),
    }


def test_the_portraits_face_and_both_eyes_are_where_they_are(portraits: dict[str, Image.Image]) -> None:
    faces = detect_faces(portraits["brad_pitt"])  # 512x512, the face about 280 px
    assert len(faces) == 1
    face = faces.faces[0]
    assert face.kind == "person"
    assert face.contains(256, 240)  # between the eyes and the mouth
    assert 240 <= face.width <= 330
    assert len(faces.eyes) == 2 and not any(e.estimated for e in faces.eyes)
    left, right = sorted(faces.eyes, key=lambda e: e.x)
    assert left.contains(195, 200) and right.contains(310, 210)  # the irises


@pytest.mark.parametrize(("name", "inside"), [("avril", (800, 450)), ("blonde_girl", (280, 290))])
def test_other_portraits_have_one_face_each(portraits: dict[str, Image.Image], name: str, inside: tuple[int, int]) -> None:
    faces = detect_faces(portraits[name])
    assert len(faces) == 1
    assert faces.faces[0].contains(*inside)


@pytest.mark.parametrize(
    "name", ["dog.jpg", "golden_gate.jpg", "chicago.jpg", "kite.jpg", "amber.jpg", "butterfly.png"]
)
def test_a_photo_without_a_face_finds_none_and_changes_nothing(content_dir: Path, name: str) -> None:
    photo = fit_longest(Image.open(content_dir / name).convert("RGB"), 512)
    faces = detect_faces(photo)
    assert not faces and faces.faces == () and faces.eyes == ()
    assert float(faces.mask().abs().sum()) == 0.0
    tensor = to_tensor(photo)
    painting = 1.0 - tensor
    called = []
    out = repaint_faces(tensor, painting, faces, lambda x: called.append(x) or x)
    assert out is painting and not called


def test_many_small_faces_of_a_group_are_found_and_nothing_else(portraits: dict[str, Image.Image]) -> None:
    # No group photo is in the shared set: eight portraits scaled to faces of 64-116 px on one
    # 1024 px canvas stand in for one (the faces are 6-11 % of the picture's width).
    canvas = Image.new("RGB", (1024, 683), (90, 110, 90))
    truth: list[Box] = []
    names = ["brad_pitt", "avril", "blonde_girl"]
    for k in range(8):
        portrait = portraits[names[k % 3]]
        face = detect_faces(portrait).faces[0]
        width = 150 + (k % 4) * 20
        scale = width / portrait.width
        x, y = 20 + (k % 4) * 250, 30 + (k // 4) * 330
        canvas.paste(portrait.resize((width, round(portrait.height * scale))), (x, y))
        truth.append(Box(x + face.x * scale, y + face.y * scale, face.width * scale, face.height * scale))
    found = detect_faces(canvas)
    matched = [f for f in found.faces if any(f.iou(t) > 0.5 for t in truth)]
    assert len(matched) == len(found.faces)  # no false face
    assert len(matched) >= 6  # measured: 6 of 8 (the two smallest, 64 and 78 px, are missed)


def test_the_mask_is_one_on_the_eyes_high_on_the_face_and_zero_away_from_it() -> None:
    faces = faces_from_boxes(400, 300, [(100, 80, 100, 100)], kind="person")
    mask = faces.mask()
    assert mask.shape == (300, 400)
    assert float(mask.min()) == 0.0 and float(mask.max()) == 1.0
    for eye in faces.eyes:
        cx, cy = eye.center
        assert float(mask[int(cy), int(cx)]) == 1.0
    assert float(mask[136, 150]) > 0.9  # the face's middle
    assert float(mask[5, 5]) == 0.0 and float(mask[150, 350]) == 0.0
    # Soft: no jump bigger than a fifth from one pixel to the next along the face's row.
    row = mask[136]
    assert float((row[1:] - row[:-1]).abs().max()) < 0.2
    half = faces.mask(size=(200, 150))
    assert half.shape == (150, 200) and float(half[68, 75]) > 0.9


def test_a_face_box_outside_the_picture_is_refused() -> None:
    with pytest.raises(ArtError, match="not inside"):
        faces_from_boxes(100, 100, [(120, 10, 20, 20)])
    with pytest.raises(ArtError, match="0..1"):
        Faces(10, 10).mask(face=1.5)


def test_repaint_faces_changes_only_the_face_and_keeps_the_paintings_colours() -> None:
    torch.manual_seed(0)
    photo = torch.rand(1, 3, 128, 160)
    painting = torch.full((1, 3, 128, 160), 0.5)
    faces = faces_from_boxes(160, 128, [(60, 40, 30, 30)])
    zooms = []

    def paint(x: torch.Tensor) -> torch.Tensor:
        zooms.append(x.shape[-1])
        return x  # "paints" the photo itself: the fine detail that comes back is the photo's

    out = repaint_faces(photo, painting, faces, paint)
    assert zooms and zooms[0] > 60  # painted bigger than the crop
    outside = faces.mask() == 0
    assert torch.equal(out[..., outside], painting[..., outside])
    inside = faces.mask() > 0.99
    assert float((out - painting)[..., inside].abs().mean()) > 0.05  # detail added...
    # ... around the painting's own colours (the crop's low frequencies are not used).
    assert abs(float(out[..., inside].mean()) - 0.5) < 0.03


def _edge_correlation(a: torch.Tensor, b: torch.Tensor, box: Box) -> float:
    """How much of the photo's structure a picture keeps inside ``box``: the correlation of
    their luminance gradients (1 = the same edges, 0 = unrelated)."""
    x, y, w, h = box.as_tuple()

    def grads(t: torch.Tensor) -> torch.Tensor:
        lum = (t[:, 0] * 0.299 + t[:, 1] * 0.587 + t[:, 2] * 0.114)[..., y : y + h, x : x + w]
        return torch.cat([(lum[..., 1:, :-1] - lum[..., :-1, :-1]).flatten(), (lum[..., :-1, 1:] - lum[..., :-1, :-1]).flatten()])

    ga, gb = grads(a), grads(b)
    ga, gb = ga - ga.mean(), gb - gb.mean()
    return float((ga * gb).sum() / (ga.norm() * gb.norm()))


@pytest.mark.slow
def test_microast_paints_the_dogs_and_the_portraits_eyes_readable(models_dir: Path, content_dir: Path, style_dir: Path) -> None:
    from atelier.service.engines import EngineLoader

    engine = EngineLoader(models_dir=models_dir, device=torch.device("cpu")).style_engine("microast")
    style = to_tensor(fit_longest(Image.open(style_dir / "starry_night.jpg").convert("RGB"), 512))
    signals = engine.encode_style(style)

    def paint(x: torch.Tensor) -> torch.Tensor:
        return engine.decode(engine.encode_content(x), [signals])

    dog = to_tensor(fit_longest(Image.open(content_dir / "dog.jpg").convert("RGB"), 512))
    # The cascades do not find the dog (see atelier.art.blocks.faces): its face is given by hand.
    cases = {
        "dog": (dog, faces_from_boxes(512, 384, [(140, 145, 68, 72)])),
        "portrait": (to_tensor(Image.open(content_dir / "brad_pitt.jpg").convert("RGB")), None),
    }
    for name, (photo, faces) in cases.items():
        faces = faces or detect_faces(photo)
        base = paint(photo)
        out = repaint_faces(photo, base, faces, paint)
        before = sum(_edge_correlation(base, photo, e) for e in faces.eyes) / len(faces.eyes)
        after = sum(_edge_correlation(out, photo, e) for e in faces.eyes) / len(faces.eyes)
        # Measured: dog 0.31 -> 0.82, portrait 0.46 -> 0.58 (and still painted: see the note).
        assert after > before + 0.1, (name, before, after)
        far = faces.mask() == 0
        assert torch.equal(out[..., far], base[..., far])
