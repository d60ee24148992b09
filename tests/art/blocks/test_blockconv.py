"""A conv computed on blocks of pixels (space-to-depth) equals the plain conv."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from atelier.art.blocks.blockconv import block_conv, block_kernel


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(
    ("height", "width", "size", "block", "in_channels", "out_channels"),
    [
        (40, 48, 9, 4, 32, 3),  # the filters' last layer, sides a multiple of the block
        (37, 29, 9, 4, 5, 3),  # sides that are not
        (20, 21, 3, 2, 4, 2),
        (15, 18, 5, 4, 3, 3),
        (9, 9, 9, 4, 2, 1),  # one output pixel
    ],
)
def test_equals_the_plain_conv(
    height: int, width: int, size: int, block: int, in_channels: int, out_channels: int,
    memory_format: torch.memory_format,
) -> None:
    generator = torch.Generator().manual_seed(height * width + size)
    x = torch.randn(2, in_channels, height, width, generator=generator)
    weight = torch.randn(out_channels, in_channels, size, size, generator=generator)
    bias = torch.randn(out_channels, generator=generator)
    expected = F.conv2d(x, weight, bias)
    kernel = block_kernel(weight, block).contiguous(memory_format=memory_format)
    ours = block_conv(x.contiguous(memory_format=memory_format), kernel, bias, block=block, size=size)
    assert ours.shape == expected.shape
    scale = float(expected.abs().max())
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6 * scale)


def test_each_tap_lands_once() -> None:
    # Every weight of the plain kernel appears block² times in the block kernel (once per
    # output phase), and nothing else is there: the rewrite only moves the taps.
    weight = torch.arange(1.0, 2 * 3 * 9 * 9 + 1).view(2, 3, 9, 9)
    kernel = block_kernel(weight, 4)
    assert kernel.shape == (2 * 16, 3 * 16, 3, 3)
    values, counts = kernel[kernel != 0].unique(return_counts=True)
    assert torch.equal(values, weight.flatten())
    assert bool((counts == 16).all())


def test_refuses_a_kernel_that_is_not_square() -> None:
    with pytest.raises(ValueError, match="square"):
        block_kernel(torch.zeros(3, 3, 9, 7), 4)
