"""How far a painted picture is from the painting's style and from the photo's content: two
numbers per render, the same for every engine (issue 15's quality record).

* **style distance**: how much of the way from the photo's Gram statistics to the painting's
  the picture went, on VGG's relu1_1, relu2_1 and relu3_1 (:data:`STYLE_LAYERS`)::

      style = sum_l ||G_l(picture) - G_l(painting)||_F^2 / sum_l ||G_l(photo) - G_l(painting)||_F^2

  1 is the untouched photo, 0 the painting's statistics (below 0 is impossible; above 1 is a
  picture further from the painting than the photo was). It is a ratio, so it does not depend
  on the absolute scale of the features and can be read across photos and paintings.
* **content distance**: the mean squared error of the picture's relu3_1 features against the
  photo's (:data:`CONTENT_LAYER`), both at the same size. 0 is the photo; it has no upper bound
  and is only comparable between pictures of the same photo.

Sizes, kept simple so that every engine is measured the same way: the photo is resized so its
longest side is ``size`` (Lanczos); the picture is resized to exactly the photo's width and
height (a picture of another aspect is stretched to it, not refused: an engine that pads or
crops is measured on what it delivered); the painting is resized so its longest side is
``size`` too, as a catalog style with ``style_scale = 1`` feeds it to a pass of that size.

Gram matrices are ``F F^T / (C*H*W)``: divided by the number of elements of the feature map,
so that pictures of different sizes (the painting and the photo) compare, and so that each
layer's weight in the sum falls with its channel count squared, as the per-layer weights
``1e3 / C^2`` of the Gatys recipes do.

The layers are fixed at relu3_1 and above it whatever VGG is installed (the full VGG-19 reaches
relu5_1; ``../shared`` ships weights that end at relu3_1): a figure means the same thing on
every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from PIL import Image

from atelier.art.blocks.images import fit_longest, to_tensor
from atelier.art.blocks.vgg import VGGEncoder

#: The layers whose Gram matrices the style distance compares.
STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1")
#: The layer whose features the content distance compares.
CONTENT_LAYER = "relu3_1"
#: The smallest ``size``: relu3_1 is at a quarter of the input, and a Gram matrix of a few
#: pixels says little.
MIN_SIZE = 32


@dataclass(frozen=True)
class Distances:
    """A picture's two distances (see the module's docstring)."""

    style: float  # Gram distance to the painting relative to the photo's: 1 = the untouched photo, 0 = the painting's statistics
    content: float  # mean squared error of the picture's relu3_1 features vs the photo's (same size)


def gram(features: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of (1, C, H, W) features divided by C*H*W, in float64."""
    _, c, h, w = features.shape
    flat = features.reshape(c, h * w).double()
    return (flat @ flat.t()) / (c * h * w)


def measure_distances(
    picture: Image.Image,
    *,
    photo: Image.Image,
    painting: Image.Image,
    encoder: VGGEncoder,
    size: int = 256,
) -> Distances:
    """The style and content distances of ``picture``, painted from ``photo`` in the style of
    ``painting``, measured at ``size`` px (the longest side; see the module's docstring).

    ``encoder`` must reach relu3_1. The style distance is NaN when the photo already has the
    painting's statistics (nothing to measure against).
    """
    if size < MIN_SIZE:
        raise ValueError(f"measure at {MIN_SIZE} px or more, not {size}")
    device = next(encoder.parameters()).device
    base = fit_longest(photo.convert("RGB"), size)
    picture = picture.convert("RGB")
    if picture.size != base.size:
        picture = picture.resize(base.size, Image.Resampling.LANCZOS)
    reference = fit_longest(painting.convert("RGB"), size)
    layers = tuple(dict.fromkeys((*STYLE_LAYERS, CONTENT_LAYER)))
    with torch.inference_mode():
        of_photo = encoder(to_tensor(base).to(device), layers=layers)
        of_picture = encoder(to_tensor(picture).to(device), layers=layers)
        of_painting = encoder(to_tensor(reference).to(device), layers=STYLE_LAYERS)
        picture_gap = 0.0
        photo_gap = 0.0
        for layer in STYLE_LAYERS:
            target = gram(of_painting[layer])
            picture_gap += float((gram(of_picture[layer]) - target).pow(2).sum())
            photo_gap += float((gram(of_photo[layer]) - target).pow(2).sum())
        content = float((of_picture[CONTENT_LAYER].double() - of_photo[CONTENT_LAYER].double()).pow(2).mean())
    style = picture_gap / photo_gap if photo_gap > 0 else math.nan
    return Distances(style=style, content=content)
