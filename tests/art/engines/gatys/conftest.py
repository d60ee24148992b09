"""Fixtures of the Gatys tests: the real relu3_1 VGG weights from ../shared, small pictures.

Sizes stay tiny (48-128 px, a few iterations): what is checked is behaviour -- losses fall, a
pass continues the previous one, seeds repeat, the style is carried -- not beauty (the README
example is made with `atelier render --engine gatys` at full size).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from atelier.art.blocks.images import fit_longest, to_tensor
from atelier.art.blocks.vgg import VGGEncoder, load_vgg


@pytest.fixture(scope="module")
def encoder(models_dir: Path) -> VGGEncoder:
    return load_vgg(models_dir / "vgg" / "vgg_normalised_conv3_1.pth")


def picture(folder: Path, name: str, size: int) -> torch.Tensor:
    with Image.open(folder / name) as image:
        return to_tensor(fit_longest(image.convert("RGB"), size))


@pytest.fixture(scope="module")
def photo(content_dir: Path) -> torch.Tensor:
    return picture(content_dir, "golden_gate.jpg", 256)


@pytest.fixture(scope="module")
def starry(style_dir: Path) -> torch.Tensor:
    return picture(style_dir, "starry_night.jpg", 256)
