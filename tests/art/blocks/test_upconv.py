"""The transposed-conv rewrite of upsample + reflection pad + 3x3 conv equals the plain one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from atelier.art.blocks.upconv import cached_kernel, transposed_kernel, upsample_conv


def plain(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """What the decoders' modules do: nearest x2, reflection pad 1, 3x3 conv."""
    up = F.interpolate(x, scale_factor=2, mode="nearest")
    return F.conv2d(F.pad(up, (1, 1, 1, 1), mode="reflect"), weight, bias)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 6), (5, 3), (16, 16), (9, 14)])
def test_equals_upsample_pad_conv(height: int, width: int, memory_format: torch.memory_format) -> None:
    generator = torch.Generator().manual_seed(height * 100 + width)
    x = torch.randn(2, 12, height, width, generator=generator).relu()
    weight = torch.randn(7, 12, 3, 3, generator=generator) / 6
    bias = torch.randn(7, generator=generator)
    expected = plain(x, weight, bias)
    kernel = transposed_kernel(weight).contiguous(memory_format=memory_format)
    ours = upsample_conv(x.contiguous(memory_format=memory_format), kernel, bias)
    assert ours.shape == (2, 7, 2 * height, 2 * width)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_a_kernel_that_is_one_tap_moves_the_upsampled_picture() -> None:
    # A lone tap at (dy, dx) = (0, 2) reads up(x)[Y - 1, X + 1]: a picture shifted by one
    # upsampled pixel, the border repeated. Checks the tap arithmetic without random sums.
    weight = torch.zeros(1, 1, 3, 3)
    weight[0, 0, 0, 2] = 1.0
    x = torch.arange(12.0).view(1, 1, 3, 4)
    ours = upsample_conv(x, transposed_kernel(weight), None)
    up = F.pad(F.interpolate(x, scale_factor=2, mode="nearest"), (1, 1, 1, 1), mode="reflect")
    assert torch.equal(ours, up[..., 0:6, 2:10])


def test_refuses_a_kernel_that_is_not_3x3() -> None:
    with pytest.raises(ValueError, match="3x3"):
        transposed_kernel(torch.zeros(4, 4, 5, 5))


def test_a_cached_kernel_follows_its_weight() -> None:
    owner = torch.nn.Conv2d(4, 2, 3)
    made: list[int] = []

    def make(weight: torch.Tensor) -> torch.Tensor:
        made.append(1)
        return transposed_kernel(weight)

    with torch.inference_mode():
        first = cached_kernel(owner, "k", owner.weight, make)
        again = cached_kernel(owner, "k", owner.weight, make)
    assert again is first and len(made) == 1
    with torch.no_grad():
        owner.weight.mul_(2.0)  # a new version of the same storage
    with torch.inference_mode():
        changed = cached_kernel(owner, "k", owner.weight, make)
    assert len(made) == 2
    torch.testing.assert_close(changed, 2.0 * first)
    # Outside inference mode nothing is kept: the kernel may join an autograd graph.
    cached_kernel(owner, "k", owner.weight, make)
    cached_kernel(owner, "k", owner.weight, make)
    assert len(made) == 4
