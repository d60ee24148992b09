"""MicroAST's fixed 4/8 px lattice: measured on flat areas, and taken out there only."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from atelier.art.errors import ArtError
from atelier.art.blocks.images import fit_longest, to_tensor
from atelier.art.blocks.lattice import flat_areas, lattice_score, suppress_lattice


def _flat_photo() -> torch.Tensor:
    """A smooth gradient (flat everywhere) with one sharp-edged square (not flat)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 128), torch.linspace(0, 1, 160), indexing="ij")
    photo = torch.stack([0.3 + 0.2 * x, 0.4 + 0.1 * y, 0.5 + 0.0 * x])[None].clone()
    photo[..., 40:90, 50:110] = torch.tensor([1.0, 1.0, 0.95]).view(1, 3, 1, 1)
    return photo


def _lattice(height: int, width: int) -> torch.Tensor:
    """A woven pattern with 8 px and 4 px periods, like MicroAST's."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    weave = 0.04 * torch.cos(2 * math.pi * x / 8) * torch.cos(2 * math.pi * y / 8) + 0.03 * torch.cos(2 * math.pi * x / 4)
    return weave.expand(1, 3, -1, -1)


def test_a_lattice_on_flat_areas_scores_high_and_is_taken_out() -> None:
    photo = _flat_photo()
    torch.manual_seed(0)
    strokes = 0.05 * torch.nn.functional.avg_pool2d(torch.rand(1, 3, 128, 160), 5, 1, 2)  # no period
    painting = (photo + strokes + _lattice(128, 160)).clamp(0, 1)
    before = lattice_score(painting, photo)
    after = lattice_score(suppress_lattice(painting, photo), photo)
    assert before > 0.3  # measured 0.41 (the strokes alone: under 0.2)
    assert after < 0.25 * before
    assert lattice_score(photo + strokes, photo) < 0.2


def test_only_flat_areas_are_touched() -> None:
    photo = _flat_photo()
    flat = flat_areas(photo)[0, 0]
    assert float(flat[5:30, 5:30].min()) == 1.0  # the gradient
    assert float(flat[60, 50]) == 0.0  # the square's edge
    painting = (photo + _lattice(128, 160)).clamp(0, 1)
    fixed = suppress_lattice(painting, photo)
    # Along the square's edges (not flat, nor within 9 px of flat... the edge pixels themselves)
    # the correction is faded; deep in the gradient it is whole.
    assert float((fixed - painting)[..., 5:30, 5:30].abs().mean()) > 0.02
    edge = flat_areas(photo)[0, 0] == 0
    weight_far = torch.nn.functional.avg_pool2d(flat_areas(photo), 9, 1, 4, count_include_pad=False)[0, 0]
    untouched = weight_far == 0
    assert bool(untouched.any()) and bool(edge.any())
    assert torch.equal(fixed[..., untouched], painting[..., untouched])


def test_a_photo_with_no_flat_area_has_no_score_and_a_bad_shape_is_refused() -> None:
    torch.manual_seed(1)
    noise = torch.rand(1, 3, 64, 64)
    assert math.isnan(lattice_score(noise, noise))
    with pytest.raises(ArtError):
        suppress_lattice(noise, torch.rand(1, 3, 32, 32))


@pytest.mark.slow
def test_microasts_lattice_is_measurably_weaker(models_dir: Path, content_dir: Path, style_dir: Path) -> None:
    from atelier.service.engines import EngineLoader

    engine = EngineLoader(models_dir=models_dir, device=torch.device("cpu")).style_engine("microast")
    photo = to_tensor(Image.open(content_dir / "brad_pitt.jpg").convert("RGB"))
    style = to_tensor(fit_longest(Image.open(style_dir / "starry_night.jpg").convert("RGB"), 512))
    painted = engine.stylize(photo, style)
    before, after = lattice_score(painted, photo), lattice_score(suppress_lattice(painted, photo), photo)
    # Measured: photo 0.015, MicroAST 0.097, after 0.023.
    assert before > 3 * lattice_score(photo, photo)
    assert after < 0.4 * before
