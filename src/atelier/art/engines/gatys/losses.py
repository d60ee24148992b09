"""The Gatys losses: Gram matrices, the fused style-layer loss and its gradient, total variation."""

from __future__ import annotations

from typing import Any

import torch

def gram(features: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of (1, C, H, W) features divided by H*W (the authors' normalisation)."""
    _, c, h, w = features.shape
    flat = features.reshape(c, h * w)
    return torch.mm(flat, flat.t()).div_(h * w)


class GramLoss(torch.autograd.Function):
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


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels (the beta=2 TV of Mahendran and
    Vedaldi; neural-style uses the L1 sum, which at its default weight only evens out noise)."""
    dy = image[..., 1:, :] - image[..., :-1, :]
    dx = image[..., :, 1:] - image[..., :, :-1]
    return dy.pow(2).mean() + dx.pow(2).mean()
