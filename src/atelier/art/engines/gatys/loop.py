"""The optimisation loop: paint a photo in a recipe's passes, each from the previous result.

The picture itself is the variable: starting from the photo (or noise, or a given image),
L-BFGS or Adam changes its pixels until its VGG features match the photo's at the content
layers and its Gram matrices match the painting's at the style layers. Targets are computed
once per pass under ``no_grad``; only the layers up to the deepest one a pass uses are run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from atelier.art.blocks.color import luminance, match_luminance, preserve_colors
from atelier.art.errors import ArtError
from atelier.art.engines.gatys.kernels import Backend, Features
from atelier.art.engines.gatys.losses import GramLoss, gram, tv_loss
from atelier.art.engines.gatys.recipes import MIN_SIZE, Init, Pass, Recipe, check_layers
from atelier.art.blocks.images import to_pil
from atelier.art.progress import Progress, ProgressCallback
from atelier.art.blocks.vgg import VGGEncoder, layer_channels

log = logging.getLogger(__name__)


@dataclass
class PassRecord:
    """What one pass did: its size (width, height), the loss at every iteration, the time."""

    index: int
    width: int
    height: int
    iterations: int
    losses: list[float] = field(default_factory=list)
    content_losses: list[float] = field(default_factory=list)
    style_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(1, len(self.losses))


@dataclass
class Painting:
    """The result of :func:`paint`: the picture (1, 3, H, W) in 0..1 and each pass's record."""

    image: torch.Tensor
    passes: list[PassRecord]

    @property
    def losses(self) -> list[float]:
        return [loss for record in self.passes for loss in record.losses]


def pass_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) with the longest side ``size`` and the photo's aspect ratio."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(shape):
        return image.clone()
    out = F.interpolate(image, size=shape, mode="bicubic", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def _as_batch(image: torch.Tensor, what: str) -> torch.Tensor:
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ArtError(f"{what} must be one RGB image (1, 3, H, W), got shape {tuple(image.shape)}")
    return image.float()


def _grey(image: torch.Tensor) -> torch.Tensor:
    return luminance(image).expand(-1, 3, -1, -1).contiguous()


def paint(
    encoder: VGGEncoder,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    *,
    recipe: Recipe,
    style_weights: Sequence[float] | None = None,
    init: Init | torch.Tensor = "content",
    original_colors: bool = False,
    seed: int = 0,
    preview_every: int = 0,
    backend: Backend = "auto",
    progress: ProgressCallback | None = None,
) -> Painting:
    """Paint ``content`` in the style of ``styles`` following ``recipe``'s passes.

    Images are (1, 3, H, W) RGB tensors in 0..1 on the encoder's device, at any size (each pass
    resizes the photo and the paintings itself; give the full-resolution photo). The result
    has the photo's aspect ratio and the last pass's size.

    * ``style_weights``: blend weights of several paintings (their Gram targets are mixed,
      as neural-style's ``-style_blend_weights``); default equal.
    * ``init``: the first pass starts from the photo (``content``), from noise (``noise``,
      seeded), or from a given image (resized). Later passes start from the previous result.
    * ``original_colors``: luminance-only transfer (Gatys et al. 2017, section 5.1): paint
      the photo's luminance with the painting's luminance (matched to the photo's mean and
      spread), then put the photo's colours back.
    * ``preview_every``: send a preview picture through ``progress`` every K iterations and
      at the end of each pass.
    * ``backend``: how the convolutions run (see :class:`Features`); ``auto`` is the fastest
      this machine has.
    * ``progress``: called after every iteration with ``stage="pass i/n"``, the iteration,
      the total loss, ``extra={"pass", "passes", "content", "style", "tv", "width", "height",
      "plan"}`` (``plan``: every pass's (width, height, iterations)) and sometimes a preview. Raising from it stops the painting.

    Refuses (ModelMissingError) a recipe that needs layers the encoder lacks.
    """
    check_layers(recipe, encoder.available_layers)
    if not styles:
        raise ArtError("give at least one style image")
    blend = _blend_weights(style_weights, len(styles))
    device = next(encoder.parameters()).device
    content = _as_batch(content, "the photo").to(device)
    styles = [_as_batch(s, "a style image").to(device) for s in styles]
    photo = content
    if original_colors:
        styles = [_grey(match_luminance(s, content)) for s in styles]
        content = _grey(content)

    generator = torch.Generator(device="cpu").manual_seed(seed)
    height, width = content.shape[-2:]
    # Arranged once for the whole recipe; each pass runs only as deep as its own layers.
    net = Features(encoder, up_to=recipe.deepest_layer, backend=backend)
    records: list[PassRecord] = []
    current: torch.Tensor | None = None
    # Every pass's (width, height, iterations), sent with each report: a progress bar can then
    # weight the passes by their work (atelier.art.progress.ProgressMeter) from the first one.
    plan = tuple(
        (shape[1], shape[0], spec.iterations)
        for spec in recipe.passes
        for shape in [pass_shape(height, width, spec.size)]
    )
    for number, spec in enumerate(recipe.passes, start=1):
        shape = pass_shape(height, width, spec.size)
        if current is not None:
            start = _resize(current, shape)
        elif isinstance(init, torch.Tensor):
            start = _resize(_as_batch(init, "the init image").to(device), shape)
            if original_colors:
                start = _grey(start)
        elif init == "noise":
            start = _noise(shape, generator).to(device)
        elif init == "content":
            start = _resize(content, shape)
        else:
            raise ArtError(f"init must be 'content', 'noise' or an image, not {init!r}")
        record = PassRecord(number, shape[1], shape[0], spec.iterations)
        current = _run_pass(
            net, spec, start,
            content=_resize(content, shape),
            styles=styles,
            blend=blend,
            record=record,
            label=f"pass {number}/{len(recipe.passes)}",
            passes=len(recipe.passes),
            plan=plan,
            preview_every=preview_every,
            photo=photo if original_colors else None,
            progress=progress,
        )
        records.append(record)
        log.info(
            "pass %d/%d %dx%d: %d iterations, loss %.4g -> %.4g, %.3f s/iteration",
            number, len(recipe.passes), shape[1], shape[0], spec.iterations,
            record.losses[0], record.losses[-1], record.seconds_per_iteration,
        )
    assert current is not None
    if original_colors:
        current = preserve_colors(current, _resize(photo, tuple(current.shape[-2:])))
    return Painting(current, records)


def _blend_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count:
        raise ArtError(f"{len(weights)} style weights for {count} style images")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ArtError("style weights must be numbers >= 0 with a positive sum")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def _noise(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    # Mid-grey plus noise: the optimizer starts from no structure at all (Gatys et al.'s white
    # noise) without the extreme values that cost L-BFGS its first dozen iterations.
    return (0.5 + 0.25 * (torch.rand(1, 3, *shape, generator=generator) - 0.5)).clamp_(0, 1)


def _run_pass(
    net: Features,
    spec: Pass,
    start: torch.Tensor,
    *,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    blend: Sequence[float],
    record: PassRecord,
    label: str,
    passes: int,
    plan: tuple[tuple[int, int, int], ...],
    preview_every: int,
    photo: torch.Tensor | None,
    progress: ProgressCallback | None,
) -> torch.Tensor:
    began = time.perf_counter()
    with torch.no_grad():
        content_targets = {
            name: feature.detach().clone()
            for name, feature in net(content, spec.content_layers).items()
        }
        style_targets: dict[str, torch.Tensor] = {}
        for style, share in zip(styles, blend):
            scaled = _resize(style, pass_shape(*style.shape[-2:], max(MIN_SIZE, round(spec.size * spec.style_scale))))
            for name, feature in net(scaled, spec.style_layers).items():
                g = gram(feature).mul_(share)
                style_targets[name] = style_targets[name] + g if name in style_targets else g
            del scaled
    layer_weights = spec.style_layer_weights or (1.0,) * len(spec.style_layers)
    # The authors' per-layer weights: 1e3 / C^2 (here style_weight / C^2 times the relative
    # weight); GramLoss's mean over the C^2 entries is their MSELoss.
    style_terms = [
        (name, spec.style_weight * relative / layer_channels(name) ** 2)
        for name, relative in zip(spec.style_layers, layer_weights)
        if relative > 0
    ]
    content_weight = spec.content_weight / len(spec.content_layers)
    layers = spec.layers
    image = start.detach().clone().contiguous().requires_grad_(True)

    iteration = 0
    total = spec.iterations

    def evaluate() -> torch.Tensor:
        nonlocal iteration
        features = net(image, layers)
        content_loss = sum(
            (F.mse_loss(features[name], target) for name, target in content_targets.items()),
            start=torch.zeros((), device=image.device),
        ) * content_weight
        style_loss = sum(
            (GramLoss.apply(features[name], style_targets[name], weight) for name, weight in style_terms),
            start=torch.zeros((), device=image.device),
        )
        loss = content_loss + style_loss
        tv = None
        if spec.tv_weight > 0:
            tv = tv_loss(image) * spec.tv_weight
            loss = loss + tv
        loss.backward()
        iteration += 1
        value = loss.item()
        record.losses.append(value)
        record.content_losses.append(content_loss.item())
        record.style_losses.append(style_loss.item())
        if progress is not None:
            preview = None
            # Every K iterations, and at the end of each pass: a short pass still shows its result.
            if preview_every > 0 and (iteration % preview_every == 0 or iteration == total):
                preview = _preview(image, photo)
            progress(
                Progress(
                    stage=label,
                    step=iteration,
                    total=total,
                    loss=value,
                    preview=preview,
                    extra={
                        "pass": record.index,
                        "passes": passes,
                        "content": record.content_losses[-1],
                        "style": record.style_losses[-1],
                        "tv": tv.item() if tv is not None else 0.0,
                        "width": record.width,
                        "height": record.height,
                        "plan": plan,
                    },
                )
            )
        return loss

    if spec.optimizer == "lbfgs":
        # As neural-style: one step() call runs every iteration, one evaluation each (no line
        # search), and never stops early (the tolerances are off).
        optimizer = torch.optim.LBFGS(
            [image], lr=spec.lr, max_iter=spec.iterations, max_eval=spec.iterations,
            tolerance_grad=-1, tolerance_change=-1, history_size=spec.history_size,
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=False)
            return evaluate()

        optimizer.step(closure)
    else:
        optimizer = torch.optim.Adam([image], lr=spec.lr)
        for _ in range(spec.iterations):
            optimizer.zero_grad(set_to_none=False)
            evaluate()
            optimizer.step()
            with torch.no_grad():
                image.clamp_(0.0, 1.0)
    record.seconds = time.perf_counter() - began
    return image.detach().clamp(0.0, 1.0)


def _preview(image: torch.Tensor, photo: torch.Tensor | None) -> Any:
    picture = image.detach().clamp(0.0, 1.0)
    if photo is not None:
        picture = preserve_colors(picture, _resize(photo, tuple(picture.shape[-2:])))
    return to_pil(picture)
