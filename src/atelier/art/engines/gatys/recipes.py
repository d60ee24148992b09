"""Gatys recipes: what a painting's passes look at and how long each runs.

A :class:`Pass` is one stage (size, iterations, layers, weights, optimizer); a :class:`Recipe`
is a named list of them, each pass starting from the previous one's result, resized (coarse to
fine, as neural-style's multires scripts and picmatix did: 350 px x 400 iterations, then
960 px x 200). :data:`RECIPES` are the built-in ones; a catalog style changes one of them
(``atelier.install.styles.StyleRecipe``).

The loss weights follow the authors' PyTorch code (leongatys/PytorchNeuralStyleTransfer): Gram
matrices divided by H*W, per-layer style weights 1e3 / C_l^2, content weight 1.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from atelier.art.errors import ArtError, ModelMissingError
from atelier.art.blocks.vgg import DOWNLOAD_HINT, LAYER_NAMES, layer_index

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
    #: L-BFGS with a strong-Wolfe line search (True), or neural-style's fixed steps (False).
    line_search: bool = True

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
            "line_search": self.line_search,
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
