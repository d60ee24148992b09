"""The fused Gram loss is the plain formula, with the same gradient and layout."""

from __future__ import annotations

import pytest
import torch

from atelier.art.engines.gatys.losses import GramLoss, gram


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_fused_gram_loss_has_the_gradient_of_the_plain_formula(channels_last: bool) -> None:
    g = torch.Generator().manual_seed(2)
    features = torch.rand(1, 6, 5, 7, dtype=torch.double, generator=g)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    target = gram(torch.rand(1, 6, 4, 4, dtype=torch.double, generator=g))
    features.requires_grad_(True)
    fused = GramLoss.apply(features, target, 3.0)
    (fused_grad,) = torch.autograd.grad(fused, features)
    plain = ((gram(features) - target) ** 2).mean() * 3.0
    (plain_grad,) = torch.autograd.grad(plain, features)
    assert torch.allclose(fused, plain)
    assert torch.allclose(fused_grad, plain_grad)
    assert fused_grad.stride() == features.stride()  # no layout change on the way back
    assert torch.autograd.gradcheck(lambda f: GramLoss.apply(f, target, 3.0), (features,))
