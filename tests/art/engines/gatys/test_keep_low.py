"""A pass that keeps a smaller painting (keep_low): it adds detail, and the picture shrunk back
is that painting; the losses still fall within the constraint."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from atelier.art.blocks.vgg import VGGEncoder
from atelier.art.engines.gatys import RECIPES, paint


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / F.mse_loss(a, b).item())


def _shrink(image: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(image, size=tuple(like.shape[-2:]), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def test_a_pass_on_a_kept_painting_paints_only_the_detail_it_cannot_hold(encoder: VGGEncoder, photo, starry) -> None:
    small = paint(encoder, photo, [starry], recipe=RECIPES["shallow"].with_passes("48x10")).image
    larger = RECIPES["shallow"].with_passes("96x10")
    kept = paint(encoder, photo, [starry], recipe=larger, init=small, keep_low=small)
    free = paint(encoder, photo, [starry], recipe=larger, init=small)
    assert tuple(kept.image.shape[-2:]) == tuple(free.image.shape[-2:]) == (2 * small.shape[-2], 2 * small.shape[-1])
    # The same painting, twice the size: shrunk back it is the small one; unconstrained, it is not.
    assert _psnr(_shrink(kept.image, small), small) >= 35.0
    assert _psnr(_shrink(free.image, small), small) < _psnr(_shrink(kept.image, small), small) - 5
    # Detail was painted: the losses fell within the constraint, and the picture is no plain enlargement.
    losses = kept.passes[0].losses
    assert losses[-1] < 0.8 * losses[0]
    enlarged = F.interpolate(small, size=tuple(kept.image.shape[-2:]), mode="bicubic", align_corners=False).clamp(0, 1)
    assert _psnr(kept.image, enlarged) < 40.0
