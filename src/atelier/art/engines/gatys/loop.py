"""The optimisation loop: paint a photo in a recipe's passes, each from the previous result.

The picture itself is the variable: starting from the photo (or noise, or a given image),
L-BFGS or Adam changes its pixels until its VGG features match the photo's at the content
layers and its Gram matrices match the painting's at the style layers. Targets are computed
once per pass under ``no_grad``; only the layers up to the deepest one a pass uses are run.

The result carries :attr:`Painting.objective`: the loss of the final picture, measured once
more after the last pass (see :func:`measure_objective`), so that two recipes, two starts or
an early-stopped and a full run can be compared on one number.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
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
    #: How many passes the painting has (this one is ``index`` of them).
    passes: int = 1
    #: True when the plateau rule ended the pass before ``iterations``.
    stopped_early: bool = False

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(1, len(self.losses))

    @property
    def iterations_run(self) -> int:
        """Iterations actually run (``iterations`` unless the plateau rule stopped the pass)."""
        return len(self.losses)


@dataclass(frozen=True)
class Objective:
    """The Gatys loss of one picture, in its parts (each already weighted as the pass weights it).

    ``total`` = ``content`` + ``style`` + ``tv``. ``layers`` are the VGG layers it was read at
    and ``size`` the longest side it was measured at.
    """

    content: float
    style: float
    tv: float
    size: int
    layers: tuple[str, ...]

    @property
    def total(self) -> float:
        return self.content + self.style + self.tv


@dataclass
class Painting:
    """The result of :func:`paint`: the picture (1, 3, H, W) in 0..1, each pass's record, and
    the final picture's objective (:func:`measure_objective` with the last pass's layers and
    weights, at its size; None only when ``paint(objective=False)``)."""

    image: torch.Tensor
    passes: list[PassRecord]
    objective: Objective | None = None

    @property
    def losses(self) -> list[float]:
        return [loss for record in self.passes for loss in record.losses]

    @property
    def stopped_early(self) -> bool:
        return any(record.stopped_early for record in self.passes)


#: Called when a pass ends, with its record and the pass's picture (1, 3, h, w) in 0..1 (before
#: the original colours are put back): a checkpoint to resume from (``init_image`` and
#: ``start_pass``), or a picture to show.
PassCallback = Callable[[PassRecord, torch.Tensor], None]


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
    init_image: torch.Tensor | None = None,
    start_pass: int = 1,
    original_colors: bool = False,
    seed: int = 0,
    preview_every: int = 0,
    backend: Backend = "auto",
    progress: ProgressCallback | None = None,
    on_pass: PassCallback | None = None,
    plateau: float | None = None,
    plateau_window: int = 20,
    objective: bool = True,
    keep_low: torch.Tensor | None = None,
) -> Painting:
    """Paint ``content`` in the style of ``styles`` following ``recipe``'s passes.

    Images are (1, 3, H, W) RGB tensors in 0..1 on the encoder's device, at any size (each pass
    resizes the photo and the paintings itself; give the full-resolution photo). The result
    has the photo's aspect ratio and the last pass's size.

    * ``style_weights``: blend weights of several paintings (their Gram targets are mixed,
      as neural-style's ``-style_blend_weights``); default equal.
    * ``init``: the first pass starts from the photo (``content``), from noise (``noise``,
      seeded), or from a given image (resized). Later passes start from the previous result.
    * ``init_image``: the first pass starts from this picture (any size; resized), e.g. a fast
      engine's painting or the preview's painting upscaled. Same as an image ``init``; giving
      both is refused.
    * ``start_pass``: begin at this pass (1-based) of the recipe, the earlier ones skipped; it
      starts from ``init_image`` (required when > 1): resuming from a checkpoint that
      ``on_pass`` handed out. Records and progress keep the recipe's numbering.
    * ``original_colors``: luminance-only transfer (Gatys et al. 2017, section 5.1): paint
      the photo's luminance with the painting's luminance (matched to the photo's mean and
      spread), then put the photo's colours back.
    * ``preview_every``: send a preview picture through ``progress`` every K iterations and
      at the end of each pass.
    * ``backend``: how the convolutions run (see :class:`Features`); ``auto`` is the fastest
      this machine has.
    * ``progress``: called after every iteration with ``stage="pass i/n"``, ``step`` the
      iteration and ``total`` the pass's iterations, the total loss,
      ``extra={"pass", "passes", "iteration", "iterations", "content", "style", "tv", "width",
      "height", "plan"}`` (``plan``: every pass's (width, height, iterations)) and sometimes a
      preview. Raising from it stops the painting (the exception propagates: a pre-empted job
      raises its own).
    * ``on_pass``: called at the end of every pass with its :class:`PassRecord` and picture.
    * ``plateau``: stop a pass early when its loss stops improving: when the best loss of the
      last ``plateau_window`` iterations is less than ``plateau`` (a fraction, e.g. 1e-3)
      below the best before them. None (the default) runs every iteration, as before.
    * ``objective``: measure :attr:`Painting.objective` on the result (one more forward pass
      at the last pass's size).
    * ``keep_low``: a smaller painting whose picture the first pass keeps: that pass paints
      only the detail finer than ``keep_low``'s resolution (each f x f block of the pass's
      picture averages to a pixel of ``keep_low``; the pass's size must be a whole multiple f
      of it), minimising the same losses within that constraint.
      A larger version of a painting already chosen (the commission's HD picture from its
      preview) stays the same painting; unconstrained, one pass at twice the size moves it
      18-24 dB away.

    Refuses (ModelMissingError) a recipe that needs layers the encoder lacks.
    """
    check_layers(recipe, encoder.available_layers)
    if not styles:
        raise ArtError("give at least one style image")
    blend = _blend_weights(style_weights, len(styles))
    if init_image is not None:
        if isinstance(init, torch.Tensor):
            raise ArtError("give the starting picture once: init_image or an image init, not both")
        init = init_image
    if not 1 <= start_pass <= len(recipe.passes):
        raise ArtError(f"start_pass must be 1..{len(recipe.passes)}, got {start_pass}")
    if start_pass > 1 and not isinstance(init, torch.Tensor):
        raise ArtError("start_pass > 1 resumes from a picture: give init_image")
    if plateau is not None and not (math.isfinite(plateau) and plateau >= 0):
        raise ArtError(f"plateau must be a fraction >= 0, got {plateau}")
    if plateau_window < 1:
        raise ArtError(f"plateau_window must be at least 1, got {plateau_window}")
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
        if number < start_pass:
            continue
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
        record = PassRecord(number, shape[1], shape[0], spec.iterations, passes=len(recipe.passes))
        current = _run_pass(
            net, spec, start,
            content=_resize(content, shape),
            styles=styles,
            blend=blend,
            record=record,
            label=f"pass {number}/{len(recipe.passes)}",
            passes=len(recipe.passes),
            plan=plan,
            keep_low=_kept_low(keep_low, device, original_colors) if current is None else None,
            preview_every=preview_every,
            photo=photo if original_colors else None,
            progress=progress,
            plateau=plateau,
            plateau_window=plateau_window,
        )
        records.append(record)
        log.info(
            "pass %d/%d %dx%d: %d of %d iterations, loss %.4g -> %.4g, style %.4g -> %.4g, %.3f s/iteration",
            number, len(recipe.passes), shape[1], shape[0], record.iterations_run, spec.iterations,
            record.losses[0], record.losses[-1], record.style_losses[0], record.style_losses[-1],
            record.seconds_per_iteration,
        )
        if on_pass is not None:
            on_pass(record, current)
    assert current is not None
    measured = None
    if objective:
        measured = _objective(
            net, current, _resize(content, tuple(current.shape[-2:])), styles, blend, recipe.passes[-1]
        )
    if original_colors:
        current = preserve_colors(current, _resize(photo, tuple(current.shape[-2:])))
    return Painting(current, records, measured)


def measure_objective(
    encoder: VGGEncoder,
    image: torch.Tensor,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    *,
    spec: Pass,
    style_weights: Sequence[float] | None = None,
    original_colors: bool = False,
    backend: Backend = "auto",
) -> Objective:
    """The Gatys loss of ``image`` (content + style + tv) under ``spec``'s layers and weights, at
    ``image``'s size: the photo is resized to it and the paintings to ``spec.style_scale`` of it,
    exactly as a pass of that size would. Any picture can be measured (another engine's, another
    recipe's), so pictures measured with the same ``spec`` compare on one scale.

    With ``original_colors`` the picture, photo and paintings are compared in luminance, as
    :func:`paint` paints them.
    """
    if not styles:
        raise ArtError("give at least one style image")
    device = next(encoder.parameters()).device
    image = _as_batch(image, "the picture").to(device)
    content = _as_batch(content, "the photo").to(device)
    styles = [_as_batch(s, "a style image").to(device) for s in styles]
    if original_colors:
        styles = [_grey(match_luminance(s, content)) for s in styles]
        content, image = _grey(content), _grey(image)
    shape = tuple(image.shape[-2:])
    spec = replace(spec, size=max(MIN_SIZE, max(shape)))
    net = Features(encoder, up_to=spec.deepest_layer, backend=backend)
    return _objective(net, image, _resize(content, shape), styles, _blend_weights(style_weights, len(styles)), spec)


def _objective(
    net: Features, image: torch.Tensor, content: torch.Tensor, styles: Sequence[torch.Tensor],
    blend: Sequence[float], spec: Pass,
) -> Objective:
    # The same terms as _run_pass's evaluate(), at the size of the picture.
    spec = replace(spec, size=max(MIN_SIZE, max(image.shape[-2:])))
    with torch.no_grad():
        content_targets, style_targets, style_terms, content_weight = _targets(net, spec, content, styles, blend)
        features = net(image.clamp(0.0, 1.0), spec.layers)
        content_loss = sum(
            (float(F.mse_loss(features[name], target)) for name, target in content_targets.items()), 0.0
        ) * content_weight
        style_loss = 0.0
        for name, weight in style_terms:
            diff = gram(features[name]) - style_targets[name]
            style_loss += float(diff.pow(2).mean()) * weight
        tv = float(tv_loss(image.clamp(0.0, 1.0))) * spec.tv_weight if spec.tv_weight > 0 else 0.0
    return Objective(content=content_loss, style=style_loss, tv=tv, size=spec.size, layers=spec.layers)


def _targets(
    net: Features, spec: Pass, content: torch.Tensor, styles: Sequence[torch.Tensor], blend: Sequence[float],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[tuple[str, float]], float]:
    """A pass's content and (blended) Gram targets, and its per-layer loss weights."""
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
    return content_targets, style_targets, style_terms, content_weight


class _Plateaued(Exception):
    """Raised inside the L-BFGS closure to end a pass whose loss stopped improving."""


class _Spent(Exception):
    """Raised inside the L-BFGS closure when the pass has used its evaluations (a line search
    may ask for more than the budget has left)."""


def _plateaued(losses: Sequence[float], tolerance: float, window: int) -> bool:
    """True when the best of the last ``window`` losses is less than ``tolerance`` (relative)
    below the best loss before them."""
    if len(losses) <= window:
        return False
    before = min(losses[:-window])
    recent = min(losses[-window:])
    return recent > before * (1.0 - tolerance)


def _blend_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count:
        raise ArtError(f"{len(weights)} style weights for {count} style images")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ArtError("style weights must be numbers >= 0 with a positive sum")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


#: Correction steps at the end of a keep_low pass (see _picture_of).
KEEP_LOW_STEPS = 10


def _kept_low(image: torch.Tensor | None, device: torch.device, grey: bool) -> torch.Tensor | None:
    if image is None:
        return None
    image = _as_batch(image, "keep_low").to(device)
    return _grey(image) if grey else image


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
    plateau: float | None = None,
    plateau_window: int = 20,
    keep_low: torch.Tensor | None = None,
) -> torch.Tensor:
    began = time.perf_counter()
    content_targets, style_targets, style_terms, content_weight = _targets(net, spec, content, styles, blend)
    layers = spec.layers
    # The optimiser's variable: the picture itself, or (keep_low) only its detail above
    # keep_low's resolution, on top of keep_low enlarged.
    picture = _picture_of(start, keep_low)
    variable = (start if keep_low is None else start - picture(torch.zeros_like(start)))
    variable = variable.detach().clone().contiguous().requires_grad_(True)

    iteration = 0
    total = spec.iterations
    # The best point seen: a line search evaluates trial points, some worse than where it
    # stands, and a pass cut short (plateau, budget, a stall) must hand out its best picture,
    # not the last one tried.
    best = variable.detach().clone()
    best_loss = math.inf

    def evaluate() -> torch.Tensor:
        nonlocal iteration, best_loss
        if iteration >= total:
            raise _Spent
        # The loss of the picture that will be delivered (clamped to 0..1, and with keep_low
        # its block means put back), not of the raw variable: unclamped, L-BFGS parks pixels
        # out of range where they lower the loss, and the delivered picture measured 3x the
        # loss the pass reported (portrait, 256 px: 3.1 vs 1.08 clamped inside; an HD pass on
        # its preview 3.28 vs 1.62). A departure from the authors' code, which clamps only at
        # the end.
        image = picture.delivered(variable)
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
        if value < best_loss:
            best_loss = value
            best.copy_(variable.detach())
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
                        "iteration": iteration,
                        "iterations": total,
                        "content": record.content_losses[-1],
                        "style": record.style_losses[-1],
                        "tv": tv.item() if tv is not None else 0.0,
                        "width": record.width,
                        "height": record.height,
                        "plan": plan,
                    },
                )
            )
        if plateau is not None and iteration < total and _plateaued(record.losses, plateau, plateau_window):
            record.stopped_early = True
            raise _Plateaued
        return loss

    if spec.optimizer == "lbfgs":
        # One step() call runs the whole pass; the tolerances are off, so it never stops early
        # on its own. The budget is counted in evaluations (one forward and backward each, the
        # unit of cost), so a pass costs the same with or without a line search.
        #
        # Departure from neural-style (and the authors' code): a strong-Wolfe line search.
        # Their fixed step (lr 1, no search) stalls on some photos: when the loss is concave
        # at the start, L-BFGS rejects the first curvature pairs, then one pair with a tiny
        # y.s makes a 27 px step that it spends the rest of the pass undoing, with steps 50x
        # too small (issue 15: the portrait's style loss fell 53 -> 33 in 150 iterations,
        # 53 -> 0.9 with the search). ``line_search = false`` in a recipe paints as they do.
        optimizer = torch.optim.LBFGS(
            [variable], lr=spec.lr, max_iter=spec.iterations, max_eval=spec.iterations,
            tolerance_grad=-1, tolerance_change=-1, history_size=spec.history_size,
            line_search_fn="strong_wolfe" if spec.line_search else None,
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=False)
            return evaluate()

        try:
            optimizer.step(closure)
        except (_Plateaued, _Spent):
            pass  # ended inside a step: the best point is taken below
        with torch.no_grad():
            variable.copy_(best)
    else:
        optimizer = torch.optim.Adam([variable], lr=spec.lr)
        for _ in range(spec.iterations):
            optimizer.zero_grad(set_to_none=False)
            try:
                evaluate()
            except _Plateaued:
                break
            optimizer.step()
            if keep_low is None:
                with torch.no_grad():
                    variable.clamp_(0.0, 1.0)
    record.seconds = time.perf_counter() - began
    with torch.no_grad():
        return picture.delivered(variable)


def _picture_of(start: torch.Tensor, keep_low: torch.Tensor | None) -> Any:
    """The pass's picture as a function of the optimiser's variable: the variable itself, or --
    with ``keep_low`` -- a picture whose f x f blocks average to keep_low's pixels (f the
    whole factor between the two sizes), the variable choosing only what varies inside each
    block. The map is an exact orthogonal projection (the variable minus its block means), so
    the optimiser sees no direction it cannot move along (a bicubic shrink/enlarge pair leaks:
    L-BFGS took that near-null space for a cheap direction and the loss rose tenfold)."""
    if keep_low is None:

        def itself(variable: torch.Tensor) -> torch.Tensor:
            return variable

        itself.delivered = lambda variable: variable.clamp(0.0, 1.0)  # type: ignore[attr-defined]
        return itself
    shape = tuple(start.shape[-2:])
    low = tuple(keep_low.shape[-2:])
    factor = shape[0] // low[0]
    if factor < 1 or shape != (low[0] * factor, low[1] * factor):
        raise ArtError(f"keep_low must be the pass's picture shrunk by a whole factor: {low} for a pass of {shape}")

    def shrink(image: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(image, factor)

    def spread(image: torch.Tensor) -> torch.Tensor:
        return F.interpolate(image, scale_factor=factor, mode="nearest")

    # Smoothly enlarged, then its block means made keep_low's exactly.
    base = F.interpolate(keep_low, size=shape, mode="bicubic", align_corners=False)
    base = (base + spread(keep_low - shrink(base))).contiguous()

    def picture(variable: torch.Tensor) -> torch.Tensor:
        return base + variable - spread(shrink(variable))

    def delivered(variable: torch.Tensor) -> torch.Tensor:
        # Clamping to 0..1 moves a few block means: alternate the two constraints (a few
        # milliseconds, differentiable, so the pass optimises the picture it hands out).
        image = picture(variable).clamp(0.0, 1.0)
        for _ in range(KEEP_LOW_STEPS):
            image = (image + spread(keep_low - shrink(image))).clamp(0.0, 1.0)
        return image

    picture.delivered = delivered  # type: ignore[attr-defined]
    return picture


def _preview(image: torch.Tensor, photo: torch.Tensor | None) -> Any:
    picture = image.detach().clamp(0.0, 1.0)
    if photo is not None:
        picture = preserve_colors(picture, _resize(photo, tuple(picture.shape[-2:])))
    return to_pil(picture)
