"""The quality record's two distances, on the real relu3_1 VGG weights: the photo is at style
distance 1 and content distance 0, the painting itself at style distance about 0, a real
stylization in between; every picture is measured at the photo's size."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from atelier.art.blocks.images import fit_longest
from atelier.art.blocks.vgg import VGGEncoder, load_vgg
from atelier.art.engines.microast import load_microast
from atelier.art.quality import Distances, measure_distances

SIZE = 128


@pytest.fixture(scope="module")
def encoder(models_dir: Path) -> VGGEncoder:
    return load_vgg(models_dir / "vgg" / "vgg_normalised_conv3_1.pth")


@pytest.fixture(scope="module")
def photo(content_dir: Path) -> Image.Image:
    with Image.open(content_dir / "dog.jpg") as image:
        return image.convert("RGB")


@pytest.fixture(scope="module")
def painting(style_dir: Path) -> Image.Image:
    with Image.open(style_dir / "starry_night.jpg") as image:
        return image.convert("RGB")


def measure(picture: Image.Image, photo: Image.Image, painting: Image.Image, encoder: VGGEncoder) -> Distances:
    return measure_distances(picture, photo=photo, painting=painting, encoder=encoder, size=SIZE)


def painting_cut_to(painting: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The painting's centre, cropped to the photo's aspect and resized to its size."""
    width, height = size
    scale = min(painting.width / width, painting.height / height)
    crop_w, crop_h = round(width * scale), round(height * scale)
    left, top = (painting.width - crop_w) // 2, (painting.height - crop_h) // 2
    return painting.crop((left, top, left + crop_w, top + crop_h)).resize(size, Image.Resampling.LANCZOS)


def test_the_untouched_photo_is_at_style_distance_one_and_content_distance_zero(photo, painting, encoder) -> None:
    distances = measure(photo, photo, painting, encoder)
    assert distances.style == pytest.approx(1.0, abs=1e-9)
    assert distances.content == pytest.approx(0.0, abs=1e-9)


def test_the_painting_itself_is_at_style_distance_about_zero(photo, painting, encoder) -> None:
    distances = measure(painting_cut_to(painting, fit_longest(photo, SIZE).size), photo, painting, encoder)
    assert distances.style < 0.05
    assert distances.content > 0


def test_a_microast_render_lies_between_the_photo_and_the_painting(photo, painting, encoder, models_dir: Path) -> None:
    engine = load_microast(
        **{part: models_dir / "microast" / f"{part}_iter_160000.pth.tar" for part in ("content_encoder", "style_encoder", "modulator", "decoder")}
    )
    small = fit_longest(photo, SIZE)
    rendered = engine.stylize(small, fit_longest(painting, SIZE))
    distances = measure(rendered, photo, painting, encoder)
    assert 0.0 < distances.style < 1.0
    assert distances.content > 0
    # Further from the photo than the photo, nearer to it than the painting is.
    assert distances.content < measure(painting_cut_to(painting, small.size), photo, painting, encoder).content


def test_a_picture_of_another_size_or_aspect_is_resized_to_the_photo_not_refused(photo, painting, encoder) -> None:
    # The photo at twice the size measures as the photo; stretched to a square it is measured
    # on the photo's grid (so it is close, but no longer the photo).
    larger = photo.resize((photo.width * 2, photo.height * 2), Image.Resampling.LANCZOS)
    assert measure(larger, photo, painting, encoder).style == pytest.approx(1.0, abs=0.02)
    square = photo.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    stretched = measure(square, photo, painting, encoder)
    assert stretched.content > 0
    assert stretched.style == pytest.approx(1.0, abs=0.2)


def test_a_size_too_small_for_relu3_1_is_refused(photo, painting, encoder) -> None:
    with pytest.raises(ValueError, match="32 px"):
        measure_distances(photo, photo=photo, painting=painting, encoder=encoder, size=16)
