"""The uncached pipeline of ``atelier render``: sizes it chooses, and the paintings it keeps
encoded between the photos of one call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.art.blocks.images import decode_image
from atelier.service.engines import EngineLoader
from atelier.service.stylize import AdaINWeights, stylize_image, tied_style_size

LIMITS = {"max_pixels": 10**8, "max_bytes": 10**8}


@pytest.fixture(scope="module")
def loader(models_dir: Path) -> EngineLoader:
    return EngineLoader(models_dir=models_dir, device=torch.device("cpu"))


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_the_style_size_follows_the_output_between_512_and_the_paintings_own() -> None:
    assert tied_style_size((1024, 640), (512, 384)) == 512  # the AdaIN reference's size
    assert tied_style_size((1024, 640), (800, 600)) == 800
    assert tied_style_size((1024, 640), (3415, 2160)) == 1024  # the painting at its full size
    assert tied_style_size((300, 200), (3415, 2160)) == 512  # a small painting: as before


@pytest.mark.parametrize("engine", ["microast", "adain"])
@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_the_style_cache_of_a_batch_encodes_each_painting_once_and_paints_the_same(
    loader: EngineLoader, content_dir: Path, style_dir: Path, engine: str, alpha: float
) -> None:
    adain = AdaINWeights(weights="ust-conv3_1") if engine == "adain" else AdaINWeights()
    starry = decode_image(style_dir / "starry_night.jpg", **LIMITS)
    muse = decode_image(style_dir / "la_muse.jpg", **LIMITS)
    cache: dict = {}
    for name in ("dog.jpg", "chicago.jpg"):
        photo = decode_image(content_dir / name, **LIMITS).resize((128, 96))
        options = dict(engine=engine, styles=[starry, muse], style_weights=[0.6, 0.4], alpha=alpha, adain=adain)
        alone = stylize_image(loader, photo, **options)  # type: ignore[arg-type]
        cached = stylize_image(loader, photo, style_cache=cache, **options)  # type: ignore[arg-type]
        assert np.abs(_array(alone) - _array(cached)).max() <= 1
    assert len(cache) == 1  # both photos are 128x96: one size, one encoding of the two paintings
