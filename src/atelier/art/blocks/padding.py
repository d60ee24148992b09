"""Fitting any image size to a network that needs multiples of some stride, and back."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(
    image: torch.Tensor, multiple: int, *, mode: str = "reflect"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (N, C, H, W) on the bottom and right up to multiples of ``multiple``.

    Returns the padded tensor and the original (H, W) for :func:`crop_to`. Reflection padding
    (the default) keeps the borders of the output free of the dark seams zero padding leaves.
    """
    height, width = image.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return image, (height, width)
    if mode == "reflect" and (pad_h >= height or pad_w >= width):
        mode = "replicate"  # reflection needs more pixels than it pads
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode), (height, width)


def crop_to(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: keep the top-left (H, W)."""
    height, width = size
    return image[..., :height, :width]
