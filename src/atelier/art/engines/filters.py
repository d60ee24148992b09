"""The fixed-style "filters": Johnson et al. 2016 feed-forward networks, one network per painting.

The network is pytorch/examples ``fast_neural_style`` ``TransformerNet`` rebuilt from its
description (../shared/models/MODELS.md, section 1), with the same module names so the official
state_dicts load strictly:

* encoder: 9x9 conv 3->32, 3x3/2 conv 32->64, 3x3/2 conv 64->128, each followed by an affine
  InstanceNorm and ReLU;
* five residual blocks at 128 channels (conv, IN, ReLU, conv, IN, + input; no ReLU after the add);
* decoder: two upsample-convs (nearest x2, then a 3x3 conv; not transposed convs) with IN and
  ReLU, then a 9x9 conv 32->3 with no activation.

Every conv reflection-pads by k//2. The network reads RGB in 0..255 (no mean subtraction) and
writes RGB in about 0..255, unbounded; :meth:`FilterNet.stylize` takes and returns 0..1.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from atelier.art.blocks.blockconv import block_conv, block_kernel
from atelier.art.errors import ImageError, ModelError
from atelier.art.blocks.padding import crop_to, pad_to_multiple
from atelier.art.progress import Progress, ProgressCallback
from atelier.art.blocks.upconv import cached_kernel, transposed_kernel, upsample_conv
from atelier.art.blocks.weights import read_state_dict

log = logging.getLogger(__name__)

#: The filters Atelier ships: registry names are ``filter-<name>``, files
#: ``fast_neural_style/<name>.pth``. pointilism has no official .pth (see MODELS.md).
FILTERS: tuple[str, ...] = ("candy", "mosaic", "rain_princess", "udnie", "pointilism")

# The official Dropbox files were saved by a torch whose InstanceNorm kept running statistics;
# pytorch/examples neural_style.py deletes these keys before loading, and so do we.
_RUNNING_STATS_KEY = re.compile(r"in\d+\.running_(mean|var)$")

# Two stride-2 convs in, two x2 upsamplings out: sizes that are not multiples of 4 would come
# back rounded up, so inputs are padded to a multiple of 4 and the output cropped back.
_MULTIPLE = 4
# The smallest side that survives the reflection pads: the quarter-resolution 3x3 convs need at
# least 2 pixels to reflect 1, i.e. 8 at full resolution.
_MIN_SIDE = 8


class _ConvLayer(nn.Module):
    """Reflection pad k//2, then a biased Conv2d (the module is named ``conv2d`` as upstream).

    Activations run channels-last (NHWC), which oneDNN's CPU convolutions prefer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.pad = kernel_size // 2
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return self.conv2d(x.contiguous(memory_format=torch.channels_last))


class _UpsampleConvLayer(_ConvLayer):
    """Nearest x2, then reflection pad and conv: upstream's answer to checkerboard artefacts.

    Computed as one transposed conv on the low-resolution input (:mod:`atelier.art.blocks.upconv`):
    the same sums with 2.25x fewer multiplications, on the two most expensive layers.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = cached_kernel(self, "transposed", self.conv2d.weight, _channels_last_transposed)
        return upsample_conv(x.contiguous(memory_format=torch.channels_last), kernel, self.conv2d.bias)


class _RGBConvLayer(_ConvLayer):
    """The last 9x9 conv (32 channels to RGB), on 4x4 blocks of pixels on CPUs.

    oneDNN runs a conv with three outputs at a quarter of its usual speed; on blocks
    (:mod:`atelier.art.blocks.blockconv`) it is a 3x3 conv from 512 to 48 channels, 2.6x faster here
    with the same products and sums. GPUs get the plain conv.
    """

    BLOCK = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        padded = F.pad(x.contiguous(memory_format=torch.channels_last), (self.pad,) * 4, mode="reflect")
        kernel = cached_kernel(self, "blocks", self.conv2d.weight, _channels_last_blocks)
        size = self.conv2d.kernel_size[0]
        return block_conv(padded, kernel, self.conv2d.bias, block=self.BLOCK, size=size)


def _channels_last_transposed(weight: torch.Tensor) -> torch.Tensor:
    return transposed_kernel(weight).contiguous(memory_format=torch.channels_last)


def _channels_last_blocks(weight: torch.Tensor) -> torch.Tensor:
    return block_kernel(weight, _RGBConvLayer.BLOCK).contiguous(memory_format=torch.channels_last)


def _norm(channels: int) -> nn.InstanceNorm2d:
    # affine, instance statistics at inference too, no running statistics (so no such keys).
    return nn.InstanceNorm2d(channels, affine=True)


def _instance_norm(norm: nn.InstanceNorm2d, x: torch.Tensor, *, relu: bool) -> torch.Tensor:
    """``norm(x)`` (then ReLU), computed in whatever memory layout x has.

    torch's instance_norm goes through batch_norm on a reshaped copy, which costs a full copy of
    every channels-last activation; this is the same arithmetic (biased variance, eps inside
    the square root) as one scale and shift. The variance is E[x^2] - E[x]^2: one read pass
    instead of two, and about 20 % off a 512 px filter here; its float32 rounding stays far below
    what the 8-bit output can show.
    """
    mean = x.mean((2, 3), keepdim=True)
    var = (x.square().mean((2, 3), keepdim=True) - mean.square()).clamp_min_(0.0)
    scale = norm.weight.view(1, -1, 1, 1) * torch.rsqrt(var + norm.eps)
    y = torch.addcmul(norm.bias.view(1, -1, 1, 1) - mean * scale, x, scale)
    return y.relu_() if relu else y


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _ConvLayer(channels, channels, 3, 1)
        self.in1 = _norm(channels)
        self.conv2 = _ConvLayer(channels, channels, 3, 1)
        self.in2 = _norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _instance_norm(self.in1, self.conv1(x), relu=True)
        return x + _instance_norm(self.in2, self.conv2(y), relu=False)


class FilterNet(nn.Module):
    """One fixed-style network (TransformerNet layout). Build it with :func:`load_filter`."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _ConvLayer(3, 32, 9, 1)
        self.in1 = _norm(32)
        self.conv2 = _ConvLayer(32, 64, 3, 2)
        self.in2 = _norm(64)
        self.conv3 = _ConvLayer(64, 128, 3, 2)
        self.in3 = _norm(128)
        self.res1 = _ResidualBlock(128)
        self.res2 = _ResidualBlock(128)
        self.res3 = _ResidualBlock(128)
        self.res4 = _ResidualBlock(128)
        self.res5 = _ResidualBlock(128)
        self.deconv1 = _UpsampleConvLayer(128, 64, 3, 1)
        self.in4 = _norm(64)
        self.deconv2 = _UpsampleConvLayer(64, 32, 3, 1)
        self.in5 = _norm(32)
        self.deconv3 = _RGBConvLayer(32, 3, 9, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The raw network: RGB 0..255 in, RGB about 0..255 out (unclamped), same H, W if % 4 == 0."""
        y = _instance_norm(self.in1, self.conv1(x), relu=True)
        y = _instance_norm(self.in2, self.conv2(y), relu=True)
        y = _instance_norm(self.in3, self.conv3(y), relu=True)
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = _instance_norm(self.in4, self.deconv1(y), relu=True)
        y = _instance_norm(self.in5, self.deconv2(y), relu=True)
        return self.deconv3(y)

    @property
    def device(self) -> torch.device:
        return self.conv1.conv2d.weight.device

    def stylize(
        self,
        content: torch.Tensor,
        *,
        strength: float = 1.0,
        progress: ProgressCallback | None = None,
    ) -> torch.Tensor:
        """Paint a batch of photos (N, 3, H, W), RGB float 0..1, in this network's style.

        Any H, W of at least 8: the input is reflection-padded to a multiple of 4 and the output
        cropped back, so it has the input's exact size. ``strength`` blends the painting with the
        photo (1 = the full filter, 0 = the photo unchanged). Returns RGB 0..1 on the input's
        device.
        """
        _check_batch(content)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be between 0 and 1, got {strength}")
        height, width = content.shape[-2:]
        if min(height, width) < _MIN_SIDE:
            raise ImageError(
                f"the image is {width}x{height} pixels; filters need at least "
                f"{_MIN_SIDE}x{_MIN_SIDE}"
            )
        with torch.inference_mode():
            photo = content.to(self.device, torch.float32)
            padded, size = pad_to_multiple(photo, _MULTIPLE, mode="reflect")
            painted = crop_to(self.forward(padded * 255.0), size)
            painted = painted.clamp_(0.0, 255.0).div_(255.0)
            if strength < 1.0:
                painted = torch.lerp(photo, painted, strength)
            result = painted.clamp_(0.0, 1.0).to(content.device)
        if progress is not None:
            progress(Progress("filter", 1, 1))
        return result


def _check_batch(content: torch.Tensor) -> None:
    if content.dim() != 4 or content.shape[1] != 3:
        raise ValueError(f"expected an (N, 3, H, W) RGB batch, got shape {tuple(content.shape)}")
    if not content.is_floating_point():
        raise ValueError(f"expected a float tensor in 0..1, got {content.dtype}")


def load_filter(path: str | Path, *, device: str | torch.device = "cpu") -> FilterNet:
    """Load one filter's weights (a pytorch/examples TransformerNet state_dict) into a FilterNet.

    Accepts both the official Dropbox files (whose InstanceNorm running statistics are dropped)
    and the shared conversions. A missing file raises :class:`ModelMissingError`; a file that is
    not such a state_dict raises :class:`ModelError`.
    """
    path = Path(path)
    state = read_state_dict(path, what="filter")
    state = {k: v for k, v in state.items() if not _RUNNING_STATS_KEY.search(k)}
    net = FilterNet()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"{path.name} is not a fast-style filter (TransformerNet) state_dict: "
            f"{_load_error_summary(exc)}"
        ) from exc
    log.debug("loaded filter %s", path)
    return net.eval().requires_grad_(False).to(device=device, memory_format=torch.channels_last)


def _load_error_summary(exc: RuntimeError) -> str:
    """The first complaint of a failed strict load, short enough for one line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 else lines[0] if lines else "keys do not match"
    return detail if len(detail) <= 160 else detail[:157] + "..."
