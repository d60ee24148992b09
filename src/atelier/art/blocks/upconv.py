"""Nearest x2 upsampling, reflection pad 1 and a 3x3 conv, as one transposed convolution.

The decoders of the filters and of AdaIN grow their pictures this way (upsample, pad, conv), and
those are their most expensive layers: the 3x3 conv runs at full resolution on pixels that come
in identical 2x2 blocks. The same linear map, written on the low-resolution input, is

    conv_transpose2d(replicate_pad(x, 1), K, stride=2, padding=3)

with a 4x4 kernel ``K`` made of sums of the 3x3 kernel's taps (:func:`transposed_kernel`):

* a reflection pad of 1 around ``up(x)`` repeats ``x``'s border pixel, which is what
  ``up(replicate_pad(x, 1))`` has there;
* output row ``Y`` reads upsampled rows ``Y-1, Y, Y+1``, i.e. input rows ``(Y+dy)//2``: two
  of the three taps land on the same input row, so each output pixel needs 2x2 input pixels
  instead of 3x3 -- 16 multiply-adds per input pixel and channel pair instead of 36 (2.25x
  fewer), and oneDNN's channels-last deconvolution writes the interleaved result directly.

Only the order of the additions changes: results equal the plain formulation to float32
rounding (about 1e-6 relative; ``tests/art/blocks/test_upconv.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def transposed_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The (in, out, 4, 4) ``conv_transpose2d`` kernel equal to upsample-then-``weight``.

    ``weight`` is a Conv2d kernel (out, in, 3, 3). Along each axis the taps (w0, w1, w2) become
    (w2, w2 + w1, w1 + w0, w0): the transposed conv places input pixel ``i`` at output
    ``2i - 3 + k``, and output ``2i + a`` reads it through the taps that fall on row ``i``.
    """
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"expected a 3x3 conv kernel (out, in, 3, 3), got {tuple(weight.shape)}")

    def widen(w: torch.Tensor, dim: int) -> torch.Tensor:
        w0, w1, w2 = w.unbind(dim)
        return torch.stack((w2, w2 + w1, w1 + w0, w0), dim)

    return widen(widen(weight, 2), 3).transpose(0, 1).contiguous()


def upsample_conv(
    x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``conv2d(reflect_pad(upsample_nearest_x2(x), 1), weight, bias)`` computed on ``x``.

    ``kernel`` is :func:`transposed_kernel` of ``weight``. Any H, W >= 1; the result is
    (N, out, 2H, 2W) in ``x``'s memory format (channels-last is the fast one on CPUs).
    """
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv_transpose2d(padded, kernel, bias, stride=2, padding=3)


def cached_kernel(
    owner: torch.nn.Module, name: str, weight: torch.Tensor, make: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``make(weight)``, kept on ``owner`` between inference calls while the weight is unchanged.

    Rebuilding the 4x4 kernels costs a few ms per call (a copy of every weight); a rewritten,
    moved or re-typed weight has another version, address or type and gets a new kernel. Only
    under ``torch.inference_mode``: a kernel made there cannot join an autograd graph.
    """
    if not torch.is_inference_mode_enabled():
        return make(weight)
    key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
    cache: dict[str, tuple[object, torch.Tensor]] = owner.__dict__.setdefault("_kernel_cache", {})
    found = cache.get(name)
    if found is not None and found[0] == key:
        return found[1]
    kernel = make(weight)
    cache[name] = (key, kernel)
    return kernel
