"""Optimisation-based style transfer (Gatys, Ecker and Bethge, CVPR 2016), painted in passes.

The picture itself is the variable: starting from the photo (or noise), L-BFGS or Adam changes
its pixels until its VGG features match the photo's at the content layers and its Gram matrices
match the painting's at the style layers. The controls are those of Gatys et al. 2017
("Controlling Perceptual Factors in Neural Style Transfer") and jcjohnson/neural-style: layers and
weights, total variation, style scale, init, several paintings with blend weights, original
colours (luminance-only transfer) -- and *passes*: a recipe paints small first, then resizes the
result and paints again at a larger size (coarse to fine, as neural-style's multires scripts and
picmatix did: 350 px x 400 iterations, then 960 px x 200).

The network is :class:`atelier.art.blocks.vgg.VGGEncoder`. Its normalised VGG-19 *is* the network Gatys
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

Where things are:

* :mod:`~atelier.art.engines.gatys.recipes` -- passes and recipes (:class:`Pass`, :class:`Recipe`, the
  built-in :data:`RECIPES`, ``"350x400,960x200"`` parsing);
* :mod:`~atelier.art.engines.gatys.kernels` -- the VGG features for many forward/backward passes (the
  hand-written convolution and pooling kernels, the backends);
* :mod:`~atelier.art.engines.gatys.losses` -- Gram matrices, the fused style loss, total variation;
* :mod:`~atelier.art.engines.gatys.loop` -- :func:`paint`, the optimisation of each pass, and
  :func:`measure_objective`, the loss of any picture under a pass's layers and weights.
"""

from __future__ import annotations

from atelier.art.engines.gatys.kernels import (
    AUTO_NNPACK_MAX_THREADS,
    Backend,
    Features,
    nnpack_available,
    resolve_backend,
)
from atelier.art.engines.gatys.loop import (
    Objective,
    Painting,
    PassCallback,
    PassRecord,
    measure_objective,
    paint,
    pass_shape,
)
from atelier.art.engines.gatys.losses import GramLoss, gram, tv_loss
from atelier.art.engines.gatys.recipes import (
    CLASSIC_CONTENT,
    CLASSIC_STYLE,
    MAX_ITERATIONS,
    MAX_SIZE,
    MIN_SIZE,
    RECIPES,
    SHALLOW_CONTENT,
    SHALLOW_STYLE,
    Init,
    Optimizer,
    Pass,
    Recipe,
    RecipeError,
    check_layers,
    parse_passes,
    pick_recipe,
    recipe_names,
)

__all__ = [
    "AUTO_NNPACK_MAX_THREADS",
    "CLASSIC_CONTENT",
    "CLASSIC_STYLE",
    "MAX_ITERATIONS",
    "MAX_SIZE",
    "MIN_SIZE",
    "RECIPES",
    "SHALLOW_CONTENT",
    "SHALLOW_STYLE",
    "Backend",
    "Features",
    "GramLoss",
    "Init",
    "Objective",
    "Optimizer",
    "Painting",
    "Pass",
    "PassCallback",
    "PassRecord",
    "Recipe",
    "RecipeError",
    "check_layers",
    "gram",
    "measure_objective",
    "nnpack_available",
    "paint",
    "parse_passes",
    "pass_shape",
    "pick_recipe",
    "recipe_names",
    "resolve_backend",
    "tv_loss",
]
