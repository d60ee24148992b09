"""Instant stylization: a photo and a style in, a picture out, in about a second.

:func:`stylize_image` is the whole pipeline for one request (the CLI's ``atelier render``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from atelier.art.color import preserve_colors
from atelier.art.errors import ArtError
from atelier.art.images import fit_longest, to_pil, to_tensor
from atelier.art.progress import Progress, ProgressCallback, no_progress
from atelier.service.engines import STYLE_ENGINES, EngineLoader

log = logging.getLogger(__name__)

#: Longest side a style image is resized to before encoding, as in the AdaIN reference
#: (``--style_size 512``): the painting's brush strokes keep a size that suits a photo.
DEFAULT_STYLE_SIZE = 512


class StyleChoiceError(ArtError):
    """The style options do not fit together (e.g. weights for a single style)."""


@dataclass(frozen=True, slots=True)
class AdaINWeights:
    """Which AdaIN weights to use: a registry set, or the files a user passed."""

    weights: str | None = None
    vgg: object | None = None
    decoder: object | None = None


def stylize_image(
    loader: EngineLoader,
    content: Image.Image,
    *,
    engine: str,
    styles: Sequence[Image.Image] = (),
    filter_name: str | None = None,
    style_weights: Sequence[float] | None = None,
    alpha: float = 1.0,
    preserve_color: bool = False,
    mask: Image.Image | None = None,
    size: int | None = None,
    style_size: int = DEFAULT_STYLE_SIZE,
    adain: AdaINWeights = AdaINWeights(),
    progress: ProgressCallback = no_progress,
) -> Image.Image:
    """Paint ``content`` with ``styles`` (arbitrary-style engines) or a named filter.

    ``size`` is the longest side of the output (default: the photo's own size). ``alpha`` is the
    strength (1 = full style, 0 = the photo). ``mask`` (white = first style, black = second)
    gives two styles to two regions, as in the AdaIN paper's Fig. 10.
    """
    if not 0.0 <= alpha <= 1.0:
        raise StyleChoiceError(f"strength (alpha) must be between 0 and 1, got {alpha}")
    if size is not None:
        content = fit_longest(content, size)
    steps = 3
    progress(Progress("load", 1, steps))
    if engine == "filter":
        if filter_name is None:
            raise StyleChoiceError("the filter engine needs a filter name as its style")
        net = loader.filter(filter_name)
        progress(Progress("paint", 2, steps))
        photo = to_tensor(content).to(loader.device)
        painted = net.stylize(photo, strength=alpha)
        if preserve_color:
            painted = preserve_colors(painted, photo)
        progress(Progress("done", 3, steps))
        return to_pil(painted)

    if engine not in STYLE_ENGINES:
        raise StyleChoiceError(f"unknown engine {engine!r}")
    if not styles:
        raise StyleChoiceError(f"the {engine} engine needs at least one style image")
    weights = _normalised_weights(style_weights, len(styles))
    model = loader.style_engine(engine, weights=adain.weights, vgg=adain.vgg, decoder=adain.decoder)  # type: ignore[arg-type]
    photo = to_tensor(content).to(loader.device)
    paintings = [to_tensor(fit_longest(style, style_size)).to(loader.device) for style in styles]
    mask_tensor = _mask_tensor(mask, content.size, len(styles)) if mask is not None else None
    progress(Progress("paint", 2, steps))
    with torch.inference_mode():
        painted = model.stylize(  # type: ignore[attr-defined]
            photo,
            paintings,
            style_weights=weights,
            alpha=alpha,
            preserve_color=preserve_color,
            mask=None if mask_tensor is None else mask_tensor.to(loader.device),
        )
    progress(Progress("done", 3, steps))
    return to_pil(painted)


def _normalised_weights(weights: Sequence[float] | None, count: int) -> list[float] | None:
    if weights is None:
        return None
    weights = list(weights)
    if len(weights) != count:
        raise StyleChoiceError(
            f"{len(weights)} style weights were given for {count} style images; give one per style"
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise StyleChoiceError("style weights must be zero or more, and not all zero")
    total = sum(weights)
    return [w / total for w in weights]


def _mask_tensor(mask: Image.Image, size: tuple[int, int], styles: int) -> torch.Tensor:
    if styles != 2:
        raise StyleChoiceError(
            f"a mask gives two styles to two regions: give exactly two --style (got {styles})"
        )
    grey = mask.convert("L").resize(size, Image.Resampling.BILINEAR)
    weight = to_tensor(grey.convert("RGB"))[:, :1]
    # One channel per style (first style where white), the form every engine takes.
    return torch.cat([weight, 1.0 - weight], dim=1)
