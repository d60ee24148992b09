"""One picture, painted once, uncached: the pipeline of ``atelier render`` for the instant
engines (MicroAST, AdaIN, the filters). The web app goes through :mod:`atelier.service.instant`
instead, which caches and batches the same steps.

Departure from the AdaIN reference kept by the instant service, not here: there,
``preserve_color`` keeps the photo's colours by luminance-only transfer after painting; here the
style is recoloured before encoding (CORAL), as the reference does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from atelier.art.blocks.color import preserve_colors
from atelier.art.blocks.images import fit_longest, to_pil, to_tensor
from atelier.art.blocks.lattice import suppress_lattice
from atelier.art.engines.protocol import encode_styles, normalised_weights, paint
from atelier.art.progress import Progress, ProgressCallback, no_progress
from atelier.service.engines import STYLE_ENGINES, EngineLoader
from atelier.service.errors import StyleChoiceError
from atelier.service.faces import FacesOption, find_faces, paint_faces_finer

#: Longest side a style image is resized to before encoding, as in the AdaIN reference
#: (``--style_size 512``): the painting's brush strokes keep a size that suits a photo.
DEFAULT_STYLE_SIZE = 512


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
    style_size: int | None = None,
    adain: AdaINWeights = AdaINWeights(),
    faces: FacesOption = True,
    delattice: bool = True,
    style_cache: dict[Any, Any] | None = None,
    progress: ProgressCallback = no_progress,
) -> Image.Image:
    """Paint ``content`` with ``styles`` (arbitrary-style engines) or a named filter.

    ``size`` is the longest side of the output (default: the photo's own size). ``alpha`` is the
    strength (1 = full style, 0 = the photo). ``mask`` (white = first style, black = second)
    gives two styles to two regions, as in the AdaIN paper's Fig. 10. ``faces``: faces are
    found and painted finer (:mod:`atelier.service.faces`); not with a ``mask``, whose regions
    a face crop would cut. ``style_size`` is the longest side the paintings are scaled to;
    None ties it to the output (:func:`tied_style_size`). ``delattice``: MicroAST's fixed 4/8 px
    pattern is taken out of flat areas (:func:`atelier.art.blocks.lattice.suppress_lattice`).

    ``style_cache`` (a dict the caller keeps between calls with the same styles and options, as
    ``atelier render`` does for a folder of photos) keeps the scaled and encoded paintings, so
    only the first photo pays for them; the pictures are the same as without it.
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
        painted = net.stylize(photo, strength=1.0)
        if alpha > 0:  # alpha 0 is the photo itself: nothing to paint finer
            painted = paint_faces_finer(
                photo, painted, find_faces(content, faces), lambda x: net.stylize(x, strength=1.0)
            )
        if alpha < 1.0:  # the filters' own strength blend, after the faces (as the service caches)
            painted = torch.lerp(photo, painted, alpha)
        if preserve_color:
            painted = preserve_colors(painted, photo)
        progress(Progress("done", 3, steps))
        return to_pil(painted)

    if engine not in STYLE_ENGINES:
        raise StyleChoiceError(f"unknown engine {engine!r}")
    if not styles:
        raise StyleChoiceError(f"the {engine} engine needs at least one style image")
    weights = normalised_weights(style_weights, len(styles)) if style_weights is not None else None
    model = loader.style_engine(engine, weights=adain.weights, vgg=adain.vgg, decoder=adain.decoder)  # type: ignore[arg-type]
    photo = to_tensor(content).to(loader.device)
    sizes = tuple(style_size or tied_style_size(style.size, content.size) for style in styles)
    mask_tensor = _mask_tensor(mask, content.size, len(styles)) if mask is not None else None
    progress(Progress("paint", 2, steps))
    mask_weights = None if mask_tensor is None else mask_tensor.to(loader.device)

    def scaled() -> list[torch.Tensor]:
        return [to_tensor(fit_longest(style, side)).to(loader.device) for style, side in zip(styles, sizes)]

    with torch.inference_mode():
        if preserve_color:
            # Recoloured to each picture painted (the photo, then each face crop): nothing to keep.
            pictures = scaled()

            def signals_of(x: torch.Tensor) -> list[Any]:
                return encode_styles(model, pictures, color_of=x)

        else:
            # The paintings' signals do not depend on the photo here: encoded once per size.
            key = (engine, adain, sizes)
            signals = style_cache.get(key) if style_cache is not None else None
            if signals is None:
                signals = encode_styles(model, scaled())
                if style_cache is not None:
                    style_cache[key] = signals

            def signals_of(x: torch.Tensor) -> list[Any]:
                return signals

        def painted_picture(x: torch.Tensor) -> torch.Tensor:
            return paint(model, x, signals_of(x), style_weights=weights, alpha=alpha, mask=mask_weights)

        painted = painted_picture(photo)
        if mask_tensor is None and alpha > 0:
            painted = paint_faces_finer(photo, painted, find_faces(content, faces), painted_picture)
        if delattice and engine == "microast":
            painted = suppress_lattice(painted, photo)
    progress(Progress("done", 3, steps))
    return to_pil(painted)


def tied_style_size(painting: tuple[int, int], output: tuple[int, int]) -> int:
    """The longest side to scale a painting to for an output of ``output`` (width, height):
    the output's longest side, but at least :data:`DEFAULT_STYLE_SIZE` (the AdaIN reference's
    size, right for outputs about that big) and, above that, never more than the painting's
    own (the official MicroAST code feeds the style at its full size for any output)."""
    return max(DEFAULT_STYLE_SIZE, min(max(painting), max(output)))


def _mask_tensor(mask: Image.Image, size: tuple[int, int], styles: int) -> torch.Tensor:
    if styles != 2:
        raise StyleChoiceError(
            f"a mask gives two styles to two regions: give exactly two --style (got {styles})"
        )
    grey = mask.convert("L").resize(size, Image.Resampling.BILINEAR)
    weight = to_tensor(grey.convert("RGB"))[:, :1]
    # One channel per style (first style where white), the form every engine takes.
    return torch.cat([weight, 1.0 - weight], dim=1)
