"""Optimisation-based style transfer (Gatys, Ecker and Bethge, CVPR 2016), painted in passes.

The picture itself is the variable: starting from the photo (or noise), L-BFGS or Adam changes
its pixels until its VGG features match the photo's at the content layers and its Gram matrices
match the painting's at the style layers. The controls are those of Gatys et al. 2017
("Controlling Perceptual Factors in Neural Style Transfer") and jcjohnson/neural-style: layers and
weights, total variation, style scale, init, several paintings with blend weights, original
colours (luminance-only transfer) -- and *passes*: a recipe paints small first, then resizes the
result and paints again at a larger size (coarse to fine, as neural-style's multires scripts and
picmatix did: 350 px x 400 iterations, then 960 px x 200).

The network is :class:`atelier.art.vgg.VGGEncoder`. Its normalised VGG-19 *is* the network Gatys
et al. used ("we used the normalized version of the 16 convolutional and 5 pooling layers of the
19-layer VGG network"), so their loss weights carry over; the weights here follow the authors'
PyTorch code (leongatys/PytorchNeuralStyleTransfer): Gram matrices divided by H*W, per-layer style
weights 1e3 / C_l^2, content weight 1. Where this differs from the paper: max-pooling (the
encoder's, as the authors' code) rather than the paper's average pooling, and reflection padding
(AdaIN's layout) rather than zero padding.

Speed (``atelier bench gatys`` measures it against the textbook loop in the same process):
nearly all the time goes to the 3x3 convolutions, forward and back to the pixels. They run on
oneDNN with channels-last activations; on one thread the large layers run on NNPACK's
Winograd/FFT convolutions instead (fewer multiplications for the same sums; the backward pass is
a forward convolution with the flipped kernel), which on two threads measured slower. Besides: only the layers up to the deepest one a pass uses are
run; the 1x1 colour-conversion layer is folded into conv1_1; ReLUs run in place where autograd
allows; pads and pools keep less for the backward pass; targets are computed once per pass
under ``no_grad``; each style layer's loss and its gradient are one fused autograd function
(one matrix product each way, where autograd would take two for the Gram's backward).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F

from atelier.art.color import luminance, match_luminance, preserve_colors
from atelier.art.errors import ArtError, ModelMissingError
from atelier.art.images import to_pil
from atelier.art.progress import Progress, ProgressCallback
from atelier.art.vgg import (
    DOWNLOAD_HINT,
    LAYER_NAMES,
    LAYOUT,
    VGGEncoder,
    layer_channels,
    layer_index,
)

log = logging.getLogger(__name__)

Optimizer = Literal["lbfgs", "adam"]
Init = Literal["content", "noise"]

#: Smallest pass size: below this the deepest pools leave a feature map of a pixel or two.
MIN_SIZE = 32
#: Largest pass size: a 4096 px pass needs tens of GB for the backward pass.
MAX_SIZE = 4096
MAX_ITERATIONS = 100_000

_LEARNING_RATE: dict[str, float] = {
    # L-BFGS takes full quasi-Newton steps (torch's lr scales them), as neural-style.
    "lbfgs": 1.0,
    # neural-style's Adam rate is 10 for pixels in 0..255; these pixels are in 0..1.
    "adam": 0.02,
}


class RecipeError(ArtError):
    """A recipe or pass specification that cannot be painted (bad syntax, unknown layer...)."""


# ----------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Pass:
    """One stage of a painting: the size, how long, and what the losses look at.

    ``size`` is the longest side in pixels. ``style_layer_weights`` are relative weights of the
    style layers (default: all 1); each layer's loss is also divided by its channel count
    squared, as in the authors' code, so that wide deep layers do not dominate. ``style_scale``
    sizes the painting relative to the picture (1: the painting's longest side equals the
    pass size; 0.5 makes its brush strokes look twice as big). ``learning_rate`` None takes the
    optimizer's default.
    """

    size: int
    iterations: int
    content_layers: tuple[str, ...] = ("relu4_2",)
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    content_weight: float = 1.0
    style_weight: float = 1e3
    style_layer_weights: tuple[float, ...] | None = None
    tv_weight: float = 0.0
    style_scale: float = 1.0
    optimizer: Optimizer = "lbfgs"
    learning_rate: float | None = None
    history_size: int = 100

    def __post_init__(self) -> None:
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise RecipeError(f"a pass size must be {MIN_SIZE}..{MAX_SIZE} pixels, got {self.size}")
        if not 1 <= self.iterations <= MAX_ITERATIONS:
            raise RecipeError(f"a pass needs 1..{MAX_ITERATIONS} iterations, got {self.iterations}")
        if not self.style_layers:
            raise RecipeError("a pass needs at least one style layer")
        for name in (*self.content_layers, *self.style_layers):
            if name not in LAYER_NAMES or name.startswith("pool"):
                raise RecipeError(
                    f"unknown VGG layer {name!r}; use relu1_1 ... relu5_4 (or conv1_1 ... conv5_4)"
                )
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise RecipeError(
                f"{len(self.style_layer_weights)} style layer weights for "
                f"{len(self.style_layers)} style layers"
            )
        for label, value in (
            ("content_weight", self.content_weight),
            ("style_weight", self.style_weight),
            ("tv_weight", self.tv_weight),
            *(("style_layer_weights", w) for w in self.style_layer_weights or ()),
        ):
            if not math.isfinite(value) or value < 0:
                raise RecipeError(f"{label} must be a finite number >= 0, got {value}")
        if not 0.05 <= self.style_scale <= 4.0:
            raise RecipeError(f"style_scale must be between 0.05 and 4, got {self.style_scale}")
        if self.optimizer not in _LEARNING_RATE:
            raise RecipeError(f"optimizer must be lbfgs or adam, got {self.optimizer!r}")
        if self.learning_rate is not None and not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise RecipeError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 1 <= self.history_size <= 1000:
            raise RecipeError(f"history_size must be 1..1000, got {self.history_size}")

    @property
    def layers(self) -> tuple[str, ...]:
        """Every layer this pass reads, in network order."""
        wanted = set(self.content_layers) | set(self.style_layers)
        return tuple(name for name in LAYER_NAMES if name in wanted)

    @property
    def deepest_layer(self) -> str:
        return max(self.layers, key=layer_index)

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else _LEARNING_RATE[self.optimizer]

    def as_dict(self) -> dict[str, Any]:
        """The pass as plain values (for a style's TOML file or a job payload)."""
        data: dict[str, Any] = {
            "size": self.size,
            "iterations": self.iterations,
            "content_layers": list(self.content_layers),
            "style_layers": list(self.style_layers),
            "content_weight": self.content_weight,
            "style_weight": self.style_weight,
            "tv_weight": self.tv_weight,
            "style_scale": self.style_scale,
            "optimizer": self.optimizer,
            "history_size": self.history_size,
        }
        if self.style_layer_weights is not None:
            data["style_layer_weights"] = list(self.style_layer_weights)
        if self.learning_rate is not None:
            data["learning_rate"] = self.learning_rate
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, defaults: Pass | None = None) -> Pass:
        """A pass from plain values; keys left out come from ``defaults`` (or the class's)."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecipeError(f"unknown pass setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = dict(data)
        for key in ("content_layers", "style_layers", "style_layer_weights"):
            if key in values and values[key] is not None:
                if isinstance(values[key], str):
                    values[key] = [part.strip() for part in values[key].split(",") if part.strip()]
                values[key] = tuple(values[key])
        try:
            if defaults is not None:
                return replace(defaults, **values)
            return cls(**values)
        except TypeError as exc:
            raise RecipeError(f"incomplete pass: {exc}") from None


# Layers of the two built-in families. Gatys et al. 2016 Fig. 2/3: content conv4_2 (we read
# relu4_2, as neural-style), style relu1_1 ... relu5_1.
CLASSIC_CONTENT = ("relu4_2",)
CLASSIC_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# With the weights that end at relu3_1 (the WCT conv3_1 encoder): every ReLU they reach for the
# style (relu1_2 and relu2_2 add texture statistics the three relu*_1 alone miss), content at
# relu3_1, the deepest there is. Receptive fields are small (relu3_1 sees 24 px), so strokes
# get their size from the passes: the first pass is small.
SHALLOW_CONTENT = ("relu3_1",)
SHALLOW_STYLE = ("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1")


@dataclass(frozen=True)
class Recipe:
    """A named list of passes; each starts from the previous one's result, resized."""

    name: str
    passes: tuple[Pass, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.passes:
            raise RecipeError(f"recipe {self.name!r} has no passes")

    @property
    def layers(self) -> tuple[str, ...]:
        wanted = {name for p in self.passes for name in p.layers}
        return tuple(name for name in LAYER_NAMES if name in wanted)

    @property
    def deepest_layer(self) -> str:
        return max(self.layers, key=layer_index)

    @property
    def size(self) -> int:
        """The longest side of the result."""
        return self.passes[-1].size

    @property
    def iterations(self) -> int:
        return sum(p.iterations for p in self.passes)

    def with_passes(self, text: str) -> Recipe:
        """This recipe with other sizes and iteration counts (``"350x400,960x200"``).

        Each new pass takes the layers and weights of the recipe's pass at the same position
        (the last one's for extra passes).
        """
        shapes = parse_passes(text)
        passes = tuple(
            replace(self.passes[min(i, len(self.passes) - 1)], size=size, iterations=iterations)
            for i, (size, iterations) in enumerate(shapes)
        )
        return replace(self, passes=passes, description=f"{self.name} layers, passes {text}")

    def scaled(self, size: int) -> Recipe:
        """The same recipe ending at ``size`` pixels, every pass scaled in proportion."""
        factor = size / self.size
        passes = tuple(replace(p, size=max(MIN_SIZE, round(p.size * factor))) for p in self.passes)
        return replace(self, passes=passes)

    def summary(self) -> str:
        """``classic: 350x400, 960x200 (relu1_1..relu5_1)``."""
        shapes = ", ".join(f"{p.size}x{p.iterations}" for p in self.passes)
        return f"{self.name}: {shapes} (layers {self.layers[0]}..{self.deepest_layer})"


_PASS_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_passes(text: str) -> list[tuple[int, int]]:
    """``"350x400,960x200"`` -> ``[(350, 400), (960, 200)]`` (size x iterations per pass)."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise RecipeError("give at least one pass as SIZExITERATIONS, e.g. 350x400,960x200")
    shapes = []
    for part in parts:
        match = _PASS_RE.match(part)
        if match is None:
            raise RecipeError(
                f"bad pass {part.strip()!r}: write SIZExITERATIONS, e.g. 350x400,960x200"
            )
        size, iterations = int(match[1]), int(match[2])
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise RecipeError(f"pass {part.strip()!r}: the size must be {MIN_SIZE}..{MAX_SIZE} pixels")
        if not 1 <= iterations <= MAX_ITERATIONS:
            raise RecipeError(f"pass {part.strip()!r}: give 1..{MAX_ITERATIONS} iterations")
        shapes.append((size, iterations))
    return shapes


def _recipe(name: str, description: str, content: tuple[str, ...], style: tuple[str, ...],
            shapes: Sequence[tuple[int, int]], **weights: Any) -> Recipe:
    passes = tuple(
        Pass(size=size, iterations=iterations, content_layers=content, style_layers=style, **weights)
        for size, iterations in shapes
    )
    return Recipe(name, passes, description)


#: The built-in recipes. ``classic`` needs the full VGG-19 (``atelier models download adain``);
#: ``shallow`` runs on the relu3_1 encoder alone. ``auto`` (see :func:`pick_recipe`) takes the
#: best the installed weights allow.
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        _recipe(
            "classic",
            "Gatys et al. 2016 layers (content relu4_2, style relu1_1..relu5_1); 350 px x 400 "
            "iterations, then 960 px x 200. Needs the full VGG-19.",
            CLASSIC_CONTENT, CLASSIC_STYLE, ((350, 400), (960, 200)),
        ),
        _recipe(
            "shallow",
            "For the VGG weights that end at relu3_1: content relu3_1, style relu1_1..relu3_1; "
            "three passes (256, 512, 960 px) so that the strokes keep a painterly size.",
            SHALLOW_CONTENT, SHALLOW_STYLE, ((256, 300), (512, 150), (960, 100)),
            content_weight=0.3, style_weight=1e4, tv_weight=0.0,
        ),
        _recipe(
            "sketch",
            "A quick look: the shallow layers, 256 px x 100 then 512 px x 50.",
            SHALLOW_CONTENT, SHALLOW_STYLE, ((256, 100), (512, 50)),
            content_weight=0.3, style_weight=1e4, tv_weight=0.0,
        ),
    )
}


def recipe_names() -> tuple[str, ...]:
    """The names ``--recipe`` takes: ``auto`` and the built-in recipes."""
    return ("auto", *RECIPES)


def pick_recipe(available_layers: Sequence[str], name: str = "auto") -> Recipe:
    """The recipe ``name``, or for ``auto`` the best one the installed layers can run.

    A named recipe that needs a layer the weights lack is refused with the download command.
    """
    if name == "auto":
        chosen = RECIPES["classic"] if "relu5_1" in available_layers else RECIPES["shallow"]
        log.info(
            "recipe auto -> %s (the installed VGG weights end at %s)",
            chosen.name, available_layers[-1] if available_layers else "nothing",
        )
        return chosen
    try:
        recipe = RECIPES[name]
    except KeyError:
        raise RecipeError(f"unknown recipe {name!r}; choose one of {', '.join(recipe_names())}") from None
    check_layers(recipe, available_layers)
    return recipe


def check_layers(recipe: Recipe, available_layers: Sequence[str]) -> None:
    """Refuse (naming the download command) a recipe that reads layers the weights lack."""
    missing = [name for name in recipe.layers if name not in available_layers]
    if missing:
        end = available_layers[-1] if available_layers else "no layer"
        raise ModelMissingError(
            f"recipe {recipe.name!r} needs VGG layer {missing[-1]}, but the installed VGG weights "
            f"end at {end}; {DOWNLOAD_HINT} for the full VGG-19, or use --recipe shallow"
        )


# ----------------------------------------------------------------------------- the network


Backend = Literal["auto", "nnpack", "onednn", "plain"]


def nnpack_available() -> bool:
    """Whether PyTorch's NNPACK convolutions can run here (CPU builds with NNPACK, x86-64 with
    AVX2 or ARM with NEON). Asking also initialises NNPACK, which its convolution needs."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


class _PadConv(torch.autograd.Function):
    """Reflection pad 1 and a 3x3 conv, forward and backward, two ways.

    * It keeps only its *unpadded* input for the backward pass and pads it again there.
      Autograd would keep the padded copy as well as the ReLU output it was made from: one
      activation-sized tensor per conv layer (about 17 % of a pass's memory at the classic
      layers), for the price of a second pad.
    * With ``flipped`` (the kernel flipped and transposed) it runs NNPACK's fast convolutions
      (Winograd or FFT transforms) for both directions: the gradient of a valid 3x3
      correlation with respect to its input is the full correlation of the output gradient
      with the flipped, transposed kernel (zero padding 2), which is again a forward
      convolution. On these AVX2 CPUs that is 1.5-3x the throughput of oneDNN's direct
      convolution, with relative differences of about 1e-5 -- the transforms compute the same
      sums in another order.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, flipped: torch.Tensor | None,
        zeros: torch.Tensor | None,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight, flipped, zeros)
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        if flipped is not None:
            return _nnpack_valid(padded, weight, bias)
        return F.conv2d(padded, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:  # type: ignore[override]
        x, weight, flipped, zeros = ctx.saved_tensors
        if flipped is not None:
            grad_padded = _nnpack_valid(grad_out.contiguous(), flipped, zeros, top=2, bottom=2, side=2)
        else:
            padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
            grad_padded = torch.ops.aten.convolution_backward(
                grad_out, padded, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, False, False]
            )[0]
            del padded
        del grad_out  # one activation-sized buffer fewer at the peak of the backward pass
        grad = torch.ops.aten.reflection_pad2d_backward(grad_padded, x, [1, 1, 1, 1])
        return grad, None, None, None, None


#: NNPACK's transform buffers for one call are about 1.8x its input plus 1.8x its output (8x8
#: Winograd tiles for 6x6 outputs), and PyTorch keeps the largest buffer it was ever asked for.
#: Layers that would need more than this run in horizontal bands (the full-resolution layers
#: of a 960 px pass would otherwise hold 0.8 GB of buffers).
NNPACK_BAND_BYTES = 96 * 1024 * 1024
#: Below this many pixels a layer runs on oneDNN instead: PyTorch has NNPACK transform the
#: kernels on every call, which costs more than the transforms save on a small feature map
#: (forward plus backward on these CPUs, one thread: 0.7-0.8x oneDNN's speed at 16x16,
#: 1.2x at 32x32, 1.1-1.3x from 64x64 up).
NNPACK_MIN_PIXELS = 32 * 32
#: ``auto`` uses NNPACK only when PyTorch runs on one thread. Measured per L-BFGS iteration
#: (``atelier bench gatys``, classic layers, issue #9), one thread: NNPACK 1.17x faster than
#: oneDNN at 256 px; two threads: oneDNN faster at 256 px (1.43x), 512 px (1.18x) and 768 px
#: (1.06x) -- NNPACK's thread pool and OpenMP's share the two cores badly.
AUTO_NNPACK_MAX_THREADS = 1


def _nnpack_valid(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, top: int = 0, bottom: int = 0, side: int = 0
) -> torch.Tensor:
    """The valid 3x3 correlation of ``x`` zero-padded by ``top``/``bottom`` rows and ``side``
    columns, on NNPACK, in bands of rows when the layer is large."""
    _, channels, height, width = x.shape
    outputs = weight.shape[0]
    out_h, out_w = height + top + bottom - 2, width + 2 * side - 2
    per_row = 1.8 * 4 * (channels + outputs) * (width + 2 * side)
    rows = max(6, int(NNPACK_BAND_BYTES // per_row) // 6 * 6)  # whole 6-row Winograd tiles
    if rows >= out_h and top == bottom:
        return torch._nnpack_spatial_convolution(x, weight, bias, [top, side], [1, 1])
    out = x.new_empty(1, outputs, out_h, out_w)
    for r0 in range(0, out_h, rows):
        r1 = min(out_h, r0 + rows)
        # Output rows [r0, r1) read padded rows [r0, r1 + 2), which are x's rows shifted by top.
        lo, hi = r0 - top, r1 + 2 - top
        band = x[:, :, max(0, lo) : min(height, hi)]
        above, below = max(0, -lo), max(0, hi - height)
        band = F.pad(band, (0, 0, above, below)) if above or below else band.contiguous()
        out[:, :, r0:r1] = torch._nnpack_spatial_convolution(band, weight, bias, [0, side], [1, 1])
    return out


class _MaxPool(torch.autograd.Function):
    """2x2 max-pool (ceil mode) that always finds the maxima in channels-last memory.

    PyTorch's CPU max-pool is ~15x slower on NCHW tensors than on channels-last ones; a
    round trip through channels-last costs less than the difference, so the NNPACK path (NCHW)
    pools that way too. The indices are kept as int32 (half of autograd's int64) for the
    backward pass, which is fast in either layout.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        layout = torch.contiguous_format if x.is_contiguous() else torch.channels_last
        pooled, indices = F.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), kernel_size=2, stride=2, ceil_mode=True
        )
        ctx.save_for_backward(x, indices.to(torch.int32).contiguous(memory_format=layout))
        return pooled.contiguous(memory_format=layout)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x, indices = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad_out, x, [2, 2], [2, 2], [0, 0], [1, 1], True, indices.long()
        )


@dataclass(frozen=True)
class _Conv:
    index: int
    weight: torch.Tensor  # for oneDNN, in ``layout``
    bias: torch.Tensor
    layout: torch.memory_format
    nnpack_weight: torch.Tensor | None = None  # NCHW, for NNPACK's forward pass
    onednn_weight: torch.Tensor | None = None  # channels-last, when ``weight`` is not (auto)
    flipped: torch.Tensor | None = None  # flipped and transposed, for NNPACK's backward pass
    zeros: torch.Tensor | None = None


class _Features:
    """The encoder's layers up to a depth, arranged for many forward/backward passes.

    Differs from :meth:`VGGEncoder.forward` only in speed and memory, not in values (to
    rounding): the 1x1 colour conversion is folded into conv1_1 (reflection padding commutes
    with a per-pixel affine map); the convolutions run on NNPACK's transforms (``nnpack``) or on
    oneDNN with channels-last activations (``onednn``; NNPACK's small late layers run there
    too); ReLUs run in place whenever the conv
    output before them is not itself a requested tap (autograd needs a ReLU's output, never its
    input, and a conv needs its input, never its output); and the pads and pools keep less for
    the backward pass (:class:`_PadConv`, :class:`_MaxPool`).
    """

    def __init__(self, encoder: VGGEncoder, *, up_to: str, backend: Backend = "auto") -> None:
        stop = layer_index(up_to)
        if stop >= encoder.depth:
            raise ModelMissingError(
                f"VGG layer {up_to} is past the installed weights (they end at "
                f"{encoder.last_layer}); {DOWNLOAD_HINT}"
            )
        pre = encoder.get_submodule("0")
        device = pre.weight.device
        self.backend = resolve_backend(backend, device)
        # ``auto`` chose NNPACK for one thread; should more threads run it later, it moves
        # to oneDNN (see AUTO_NNPACK_MAX_THREADS).
        self.auto = backend == "auto" and self.backend == "nnpack"
        # With NNPACK, the small late layers run on oneDNN: channels-last suits those.
        fmt = torch.contiguous_format if self.backend == "plain" else torch.channels_last
        self.memory_format = fmt
        self.steps: list[tuple[str, int, _Conv | None]] = []
        pre_w = pre.weight.detach()[:, :, 0, 0]  # (3 out, 3 in)
        pre_b = pre.bias.detach()
        for layer in LAYOUT[1 : stop + 1]:
            if layer.kind == "conv":
                conv = encoder.get_submodule(str(layer.index))
                weight, bias = conv.weight.detach(), conv.bias.detach()
                if layer.name == "conv1_1":
                    # conv(pad(W0 x + b0)) = (W ∘ W0) * pad(x) + (b + sum W b0)
                    bias = bias + torch.einsum("ocij,c->o", weight, pre_b)
                    weight = torch.einsum("ocij,cd->odij", weight, pre_w)
                layout = fmt
                if self.backend == "nnpack" and layer.in_channels < 16:
                    # conv1_1 (3 input channels) runs on oneDNN -- NNPACK's transforms pay off
                    # only with many channels -- but in NCHW, which the NNPACK layer after it reads.
                    layout = torch.contiguous_format
                step = _Conv(layer.index, weight.contiguous(memory_format=layout), bias.contiguous(), layout)
                if layout != fmt:
                    step = replace(step, onednn_weight=weight.contiguous(memory_format=fmt))
                if self.backend == "nnpack" and layer.in_channels >= 16:
                    flipped = weight.flip(2, 3).transpose(0, 1).contiguous()
                    step = replace(
                        step, nnpack_weight=weight.contiguous(), flipped=flipped,
                        zeros=torch.zeros(flipped.shape[0], device=device),
                    )
                self.steps.append(("conv", layer.index, step))
            elif layer.kind in ("relu", "pool"):
                self.steps.append((layer.kind, layer.index, None))

    def __call__(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        wanted = {layer_index(name): name for name in layers}
        stop = max(wanted)
        x = x.contiguous(memory_format=self.memory_format)
        use_nnpack = self.backend == "nnpack" and not (
            self.auto and torch.get_num_threads() > AUTO_NNPACK_MAX_THREADS
        )
        found: dict[str, torch.Tensor] = {}
        for kind, index, conv in self.steps:
            if index > stop:
                break
            if conv is not None:
                if use_nnpack and conv.flipped is not None and x.shape[-2] * x.shape[-1] >= NNPACK_MIN_PIXELS:
                    x = _PadConv.apply(x.contiguous(), conv.nnpack_weight, conv.bias, conv.flipped, conv.zeros)
                elif use_nnpack or conv.onednn_weight is None:
                    x = _PadConv.apply(x.contiguous(memory_format=conv.layout), conv.weight, conv.bias, None, None)
                else:  # conv1_1 of an auto pass that stays on oneDNN: channels-last throughout
                    x = _PadConv.apply(
                        x.contiguous(memory_format=self.memory_format), conv.onednn_weight, conv.bias, None, None
                    )
            elif kind == "relu":
                x = torch.relu(x) if (index - 1) in wanted else torch.relu_(x)
            else:
                x = _MaxPool.apply(x)
            if index in wanted:
                found[wanted[index]] = x
        return found


def resolve_backend(backend: Backend, device: torch.device) -> Literal["nnpack", "onednn", "plain"]:
    """``auto``: on a CPU, NNPACK when it is there and PyTorch runs on one thread, else
    channels-last oneDNN (measured faster with several threads, see
    :data:`AUTO_NNPACK_MAX_THREADS`); the plain layout on GPUs (cuDNN picks its own
    algorithms). An explicit ``nnpack`` always uses NNPACK."""
    if backend == "auto":
        if device.type != "cpu":
            return "plain"
        if nnpack_available() and torch.get_num_threads() <= AUTO_NNPACK_MAX_THREADS:
            return "nnpack"
        return "onednn"
    if backend == "nnpack" and (device.type != "cpu" or not nnpack_available()):
        raise ArtError("the nnpack backend needs a CPU build of PyTorch with NNPACK")
    if backend not in ("nnpack", "onednn", "plain"):
        raise ArtError(f"unknown backend {backend!r}: auto, nnpack, onednn or plain")
    return backend  # type: ignore[return-value]


def gram(features: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of (1, C, H, W) features divided by H*W (the authors' normalisation)."""
    _, c, h, w = features.shape
    flat = features.reshape(c, h * w)
    return torch.mm(flat, flat.t()).div_(h * w)


class _GramLoss(torch.autograd.Function):
    """``weight * mean((gram(F) - target)^2)`` and its gradient, fused.

    Autograd through ``mm(X, X.T)`` takes two products for the backward pass; the Gram matrix
    is symmetric, so d/dX = 2 * sym(dL/dG) X / P is one product. Features may be channels-last
    (X is then a transposed view): the gradient is built in the same layout so that it adds to
    the gradient from the next layer without a copy.
    """

    @staticmethod
    def forward(ctx: Any, features: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:  # type: ignore[override]
        _, c, h, w = features.shape
        points = h * w
        flat = features.reshape(c, points)
        diff = torch.mm(flat, flat.t()).div_(points).sub_(target)
        ctx.save_for_backward(features, diff)
        ctx.scale = 4.0 * weight / (c * c * points)  # d/dX of w * sum(diff^2) / c^2
        return diff.pow(2).mean().mul(weight)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        features, diff = ctx.saved_tensors
        _, c, h, w = features.shape
        flat = features.reshape(c, h * w)
        scale = grad_out * ctx.scale
        if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
            # flat is the transposed view of a contiguous (P, C); so is the gradient made here.
            grad = torch.mm(flat.t(), diff).mul_(scale).reshape(1, h, w, c).permute(0, 3, 1, 2)
        else:
            grad = torch.mm(diff, flat).mul_(scale).reshape(1, c, h, w)
        return grad, None, None


def _tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels (the beta=2 TV of Mahendran and
    Vedaldi; neural-style uses the L1 sum, which at its default weight only evens out noise)."""
    dy = image[..., 1:, :] - image[..., :-1, :]
    dx = image[..., :, 1:] - image[..., :, :-1]
    return dy.pow(2).mean() + dx.pow(2).mean()


# ----------------------------------------------------------------------------- painting


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
    * ``backend``: how the convolutions run (see :class:`_Features`); ``auto`` is the fastest
      this machine has.
    * ``progress``: called after every iteration with ``stage="pass i/n"``, the iteration,
      the total loss, ``extra={"pass", "passes", "content", "style", "tv", "width", "height"}``
      and sometimes a preview. Raising from it stops the painting.

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
    net = _Features(encoder, up_to=recipe.deepest_layer, backend=backend)
    records: list[PassRecord] = []
    current: torch.Tensor | None = None
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
    net: _Features,
    spec: Pass,
    start: torch.Tensor,
    *,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    blend: Sequence[float],
    record: PassRecord,
    label: str,
    passes: int,
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
    # weight); _GramLoss's mean over the C^2 entries is their MSELoss.
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
            (_GramLoss.apply(features[name], style_targets[name], weight) for name, weight in style_terms),
            start=torch.zeros((), device=image.device),
        )
        loss = content_loss + style_loss
        tv = None
        if spec.tv_weight > 0:
            tv = _tv_loss(image) * spec.tv_weight
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
