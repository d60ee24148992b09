"""The VGG features, arranged for many forward/backward passes: hand-written autograd kernels.

Nearly all of a painting's time goes to the 3x3 convolutions, forward and back to the pixels.
:class:`Features` runs them on oneDNN with channels-last activations, or on one thread on
NNPACK's Winograd/FFT convolutions (fewer multiplications for the same sums; the backward pass
is a forward convolution with the flipped kernel), which on two threads measured slower.
Besides: only the layers up to the deepest one asked for are run; the 1x1 colour-conversion
layer is folded into conv1_1; ReLUs run in place where autograd allows; pads and pools keep
less for the backward pass. Values equal :meth:`atelier.art.blocks.vgg.VGGEncoder.forward`'s to
rounding (tests/art/engines/gatys/test_kernels.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F

from atelier.art.errors import ArtError, ModelMissingError
from atelier.art.blocks.vgg import DOWNLOAD_HINT, LAYOUT, VGGEncoder, layer_index

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


class Features:
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
