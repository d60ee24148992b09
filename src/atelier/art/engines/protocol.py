"""What every arbitrary-style engine offers, so callers can cache the expensive halves, and the
one composition of those steps (:func:`paint`, :func:`encode_styles`, :func:`stylize`).

An engine splits a stylization into three steps:

* ``encode_content(content, *, own_style, progress)`` -- the photo's features. Cache them by the
  photo's hash: re-picking a style must not re-encode the photo.
* ``encode_style(style, *, color_of)`` -- the painting's statistics. Cache them by the style's
  hash or name.
* ``decode(content_features, style_features, ...)`` -- the picture.

Tensors are float RGB in 0..1, shaped (N, 3, H, W); a batch of N contents shares one size.
Every caller that paints goes through the functions below (the engines' own ``stylize``, the
uncached pipeline of ``atelier render``, the instant service's faces, the videos), so the steps
are put together in one place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

import torch
from PIL import Image

from atelier.art.blocks.images import to_pil, to_tensor
from atelier.art.errors import ArtError
from atelier.art.progress import Progress, ProgressCallback

ImageLike: TypeAlias = torch.Tensor | Image.Image


@runtime_checkable
class StyleEngine(Protocol):
    """An arbitrary-style engine (AdaIN, MicroAST)."""

    name: str

    def encode_content(self, content: torch.Tensor, *, own_style: bool = True, progress: ProgressCallback | None = None) -> Any:
        """Features of a batch of content images (N, 3, H, W) in 0..1. ``own_style=False``: only
        a decode at full strength without a mask will read them (an engine may skip the part
        that encodes the photo as a style)."""
        ...

    def encode_style(self, style: torch.Tensor, *, color_of: torch.Tensor | None = None) -> Any:
        """Statistics of one style image (1, 3, h, w) in 0..1; with ``color_of`` (photos), the
        style recoloured to each photo's colours first."""
        ...

    def decode(
        self,
        content: Any,
        styles: list[Any],
        *,
        style_weights: list[float] | None = None,
        alpha: float = 1.0,
        mask: torch.Tensor | None = None,
        progress: ProgressCallback | None = None,
    ) -> torch.Tensor:
        """The stylized batch (N, 3, H, W) in 0..1 at the content's size."""
        ...


def normalised_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Blend weights of ``count`` styles summing to 1 (equal when None); refused unless there is
    one per style, none negative or not a number, and not all zero."""
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ArtError(f"give one weight per style: {len(weights)} weights for {count} styles")
    if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise ArtError("style weights must be zero or more, and not all zero")
    total = sum(weights)
    return [w / total for w in weights]


def mask_batch(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A user's mask, (H, W), (K, H, W) or (N, K, H, W), as (N, K, H, W); refused unless it is the
    photo's ``size`` (height, width)."""
    if mask.dim() == 2:
        mask = mask[None, None]
    elif mask.dim() == 3:
        mask = mask[None]
    if mask.dim() != 4:
        raise ArtError(f"the mask must be (H, W) or (N, K, H, W), got {tuple(mask.shape)}")
    if tuple(mask.shape[-2:]) != tuple(size):
        raise ArtError(
            f"the mask is {mask.shape[-1]}x{mask.shape[-2]} px but the photo is "
            f"{size[1]}x{size[0]} px; they must be the same size"
        )
    return mask


def encode_styles(
    engine: StyleEngine,
    paintings: Sequence[torch.Tensor],
    *,
    color_of: torch.Tensor | None = None,
    progress: ProgressCallback | None = None,
) -> list[Any]:
    """Each painting (1, 3, h, w) encoded, recoloured to ``color_of`` (photos) when given."""
    signals = []
    for index, painting in enumerate(paintings, 1):
        signals.append(engine.encode_style(painting, color_of=color_of))
        if progress is not None:
            progress(Progress("encode style", index, len(paintings)))
    return signals


def paint(
    engine: StyleEngine,
    photo: torch.Tensor,
    signals: Sequence[Any],
    *,
    style_weights: Sequence[float] | None = None,
    alpha: float = 1.0,
    mask: torch.Tensor | None = None,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> torch.Tensor:
    """``photo`` (N, 3, H, W) painted with encoded styles: the half of a stylization that depends
    on the photo. ``options`` are the engine's own (MicroAST's ``tile``)."""
    # The photo's own style signals are only read below alpha 1 or by a mask's "keep the photo".
    content = engine.encode_content(photo, own_style=alpha < 1.0 or mask is not None, progress=progress, **options)
    weights = list(style_weights) if style_weights is not None else None
    return engine.decode(content, list(signals), style_weights=weights, alpha=alpha, mask=mask, progress=progress, **options)


def mask_weights(mask: Image.Image) -> torch.Tensor:
    """A grey-level picture as weights (1, 1, H, W): white 1, black 0."""
    return to_tensor(mask.convert("L").convert("RGB"))[:, :1]


def stylize(
    engine: StyleEngine,
    content: ImageLike,
    styles: ImageLike | Sequence[ImageLike],
    *,
    style_weights: Sequence[float] | None = None,
    alpha: float = 1.0,
    preserve_color: bool = False,
    mask: torch.Tensor | Image.Image | None = None,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> ImageLike:
    """Encode, encode, decode: for callers that do not cache.

    ``content`` is a PIL image or an (N, 3, H, W) tensor in 0..1 and the result is of the same
    kind (tensors come back on the content's device). ``styles`` is one picture or a list (PIL or
    (1, 3, h, w)). ``preserve_color`` recolours each style to the photo's colours (CORAL) before
    encoding, per photo of a batch. A PIL ``mask`` gives weights by its grey levels. The other
    options are the engine's ``decode``'s.
    """
    was_pil = isinstance(content, Image.Image)
    photo = to_tensor(content) if was_pil else content
    style_list = [styles] if isinstance(styles, (torch.Tensor, Image.Image)) else list(styles)
    if not style_list:
        raise ArtError("give at least one style")
    paintings = [to_tensor(s) if isinstance(s, Image.Image) else s for s in style_list]
    if isinstance(mask, Image.Image):
        mask = mask_weights(mask)
    signals = encode_styles(engine, paintings, color_of=photo if preserve_color else None, progress=progress)
    out = paint(engine, photo, signals, style_weights=style_weights, alpha=alpha, mask=mask, progress=progress, **options)
    return to_pil(out) if was_pil else out.to(photo.device)


class Stylizes:
    """Gives an engine the one-call :func:`stylize` as a method."""

    def stylize(self, content: ImageLike, styles: ImageLike | Sequence[ImageLike], **options: Any) -> ImageLike:
        """:func:`atelier.art.engines.protocol.stylize` with this engine."""
        return stylize(self, content, styles, **options)  # type: ignore[arg-type]
