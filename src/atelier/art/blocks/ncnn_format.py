"""ncnn models (``.param`` text + ``.bin`` weights) read from disk and run in PyTorch.

The official waifu2x weights are only published as ncnn conversions (nihui/waifu2x-ncnn-vulkan),
so instead of a hand-written waifu2x network per architecture this module reads the graph the
``.param`` file describes and runs it layer by layer: upconv_7, cunet and cunet's 1x denoise model
are three graphs for the same executor.

Formats, as ncnn's own ``ParamDict::load_param`` and ``ModelBinFromDataReader::load`` read them:

* ``.param``: the magic ``7767517``, then ``layer_count blob_count``, then one line per layer:
  ``Type name n_in n_out in_blobs... out_blobs... k=v ...``. A value is a float when it holds a
  ``.`` or an ``e``, an int otherwise; a key ``-233xx`` is an array (id ``xx``) written
  ``-23310=count,v1,v2``.
* ``.bin``: each layer's blobs in layer order. A blob loaded "auto" (type 0: conv, deconv and
  inner-product weights) starts with a 4-byte tag: ``0x01306B47`` fp16 (padded to 4 bytes),
  ``0x000D4B38`` int8, ``0x0002C056`` or ``0`` raw fp32, any other non-zero tag a 256-entry
  fp32 codebook plus uint8 indices. A blob loaded "raw" (type 1: biases, scales) is fp32 with no
  tag. Weights of [de]convolutions are ``[out][in][kh][kw]``.

Only the layer types and options these models use are run; anything else is refused with a
:class:`~atelier.art.errors.ModelError` rather than guessed at.

Besides plain ``forward``, :meth:`NcnnNet.run` supports tiled inference that equals whole-image
inference even through global pooling (cunet's squeeze-and-excitation blocks): each blob carries
the map from its pixel grid to the input's, so a tile can report the sum over the positions it
*owns*, and the caller can feed the whole image's means back in (see ``atelier.art.engines.upscale``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atelier.art.errors import ModelError

PARAM_MAGIC = 7767517

TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056

ParamValue = int | float | tuple[int | float, ...]

#: Layer types that carry no weights in the .bin.
_WEIGHTLESS = {"Input", "Split", "ReLU", "Sigmoid", "Crop", "Eltwise", "Pooling", "Noop", "Dropout"}


# --------------------------------------------------------------------------------------------
# .param


@dataclass(frozen=True)
class NcnnLayer:
    """One line of a ``.param`` file."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: Mapping[int, ParamValue] = field(default_factory=dict)

    def get(self, key: int, default: ParamValue) -> ParamValue:
        return self.params.get(key, default)

    def int_param(self, key: int, default: int) -> int:
        value = self.params.get(key, default)
        if isinstance(value, tuple):
            raise ModelError(f"ncnn layer {self.name!r}: parameter {key} is an array, expected a number")
        return int(value)

    def float_param(self, key: int, default: float) -> float:
        value = self.params.get(key, default)
        if isinstance(value, tuple):
            raise ModelError(f"ncnn layer {self.name!r}: parameter {key} is an array, expected a number")
        return float(value)

    def array_param(self, key: int) -> tuple[float, ...]:
        value = self.params.get(key, ())
        return tuple(float(v) for v in value) if isinstance(value, tuple) else (float(value),)


def _number(text: str) -> int | float:
    # ncnn's rule (vstr_is_float): a '.' or an 'e' makes it a float.
    if "." in text or "e" in text.lower():
        return float(text)
    return int(text)


def parse_param(text: str, *, source: str = ".param") -> list[NcnnLayer]:
    """Parse the text of an ncnn ``.param`` file into its layers, in file order."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != str(PARAM_MAGIC):
        raise ModelError(f"{source} is not an ncnn text .param file (no magic {PARAM_MAGIC} on line 1)")
    try:
        layer_count, blob_count = (int(v) for v in lines[1].split())
    except (IndexError, ValueError):
        raise ModelError(f"{source}: line 2 must be 'layer_count blob_count'") from None
    layers: list[NcnnLayer] = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        try:
            kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
            inputs = tuple(fields[4 : 4 + n_in])
            outputs = tuple(fields[4 + n_in : 4 + n_in + n_out])
            if len(inputs) != n_in or len(outputs) != n_out:
                raise ValueError
            params: dict[int, ParamValue] = {}
            for item in fields[4 + n_in + n_out :]:
                key_text, value_text = item.split("=", 1)
                key = int(key_text)
                if key <= -23300:
                    count_text, *values = value_text.split(",")
                    if int(count_text) != len(values):
                        raise ValueError
                    params[-key - 23300] = tuple(_number(v) for v in values)
                else:
                    params[key] = _number(value_text)
        except (IndexError, ValueError):
            raise ModelError(f"{source}: line {number} is not a valid ncnn layer: {line[:80]!r}") from None
        layers.append(NcnnLayer(kind, name, inputs, outputs, params))
    if len(layers) != layer_count:
        raise ModelError(f"{source} declares {layer_count} layers but holds {len(layers)}")
    blobs = {blob for layer in layers for blob in layer.outputs}
    if len(blobs) != blob_count:
        raise ModelError(f"{source} declares {blob_count} blobs but its layers produce {len(blobs)}")
    return layers


def read_param(path: Path) -> list[NcnnLayer]:
    """Read and parse an ncnn text ``.param`` file."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise ModelError(f"{path} is not an ncnn text .param file (binary .param.bin is not supported)") from None
    return parse_param(text, source=str(path))


# --------------------------------------------------------------------------------------------
# .bin


class WeightReader:
    """Reads blobs out of an ncnn ``.bin`` the way ``ModelBinFromDataReader::load`` does."""

    def __init__(self, data: bytes, *, source: str = ".bin") -> None:
        self.data = memoryview(data)
        self.offset = 0
        self.source = source

    def _take(self, size: int) -> memoryview:
        if self.offset + size > len(self.data):
            raise ModelError(
                f"{self.source} is too short for its .param (needs {self.offset + size} bytes, "
                f"has {len(self.data)}): the pair does not match or the file is truncated"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def raw(self, count: int) -> np.ndarray:
        """``load(count, 1)``: fp32 with no tag (biases, scales)."""
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)

    def auto(self, count: int) -> np.ndarray:
        """``load(count, 0)``: a tag says how the values are stored (weights)."""
        (tag,) = struct.unpack("<I", self._take(4))
        if tag == TAG_FP16:
            stored = (2 * count + 3) // 4 * 4
            chunk = self._take(stored)[: 2 * count]
            # ncnn keeps fp16 weights and widens them when it computes; widen once here.
            return np.frombuffer(chunk, dtype="<f2").astype(np.float32)
        if tag == TAG_INT8:
            raise ModelError(f"{self.source}: int8-quantised weights are not supported")
        if tag == TAG_FP32_SCALED or tag == 0:
            return self.raw(count)
        # Any other tag (ncnn: a non-zero byte sum) announces a 256-entry codebook.
        table = np.frombuffer(self._take(256 * 4), dtype="<f4")
        indices = np.frombuffer(self._take((count + 3) // 4 * 4)[:count], dtype=np.uint8)
        return table[indices].astype(np.float32)

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset


def _layer_weights(layer: NcnnLayer, reader: WeightReader) -> dict[str, np.ndarray]:
    kind = layer.type
    if kind in ("Convolution", "Deconvolution", "InnerProduct"):
        blobs = {"weight": reader.auto(layer.int_param(6 if kind != "InnerProduct" else 2, 0))}
        if layer.int_param(5 if kind != "InnerProduct" else 1, 0):
            blobs["bias"] = reader.raw(layer.int_param(0, 0))
        if layer.int_param(8, 0):
            raise ModelError(f"ncnn layer {layer.name!r}: int8 scale terms are not supported")
        return blobs
    if kind == "Scale":
        size = layer.int_param(0, 0)
        if size == -233:  # the scale comes from a second input blob
            if layer.int_param(1, 0):
                raise ModelError(f"ncnn layer {layer.name!r}: a blob Scale with a bias is not supported")
            return {}
        blobs = {"scale": reader.raw(size)}
        if layer.int_param(1, 0):
            blobs["bias"] = reader.raw(size)
        return blobs
    if kind in _WEIGHTLESS:
        return {}
    raise ModelError(f"ncnn layer type {kind!r} (layer {layer.name!r}) is not supported")


def read_weights(layers: Sequence[NcnnLayer], data: bytes, *, source: str = ".bin") -> dict[str, dict[str, np.ndarray]]:
    """Split a ``.bin`` into per-layer arrays (float32), checking that it is used exactly."""
    reader = WeightReader(data, source=source)
    weights = {layer.name: _layer_weights(layer, reader) for layer in layers}
    if reader.remaining:
        raise ModelError(
            f"{source} has {reader.remaining} bytes more than its .param describes: "
            "the pair does not match"
        )
    return weights


# --------------------------------------------------------------------------------------------
# The executor

@dataclass(frozen=True)
class _Axis:
    """Maps a blob's pixel index j along one axis to a coordinate of the network's input.

    The input coordinate of the centre of pixel j is ``j * step + start``. Convolutions multiply
    the step by their stride, deconvolutions divide it; crops and paddings shift the start.
    """

    step: Fraction
    start: Fraction

    def conv(self, kernel: int, stride: int, dilation: int, pad: int) -> _Axis:
        centre = Fraction((kernel - 1) * dilation, 2) - pad
        return _Axis(self.step * stride, self.start + centre * self.step)

    def deconv(self, kernel: int, stride: int, dilation: int, pad: int) -> _Axis:
        centre = Fraction((kernel - 1) * dilation, 2) - pad
        return _Axis(self.step / stride, self.start - centre * self.step / stride)

    def shift(self, offset: int) -> _Axis:
        return _Axis(self.step, self.start + offset * self.step)

    def positions(self, size: int) -> np.ndarray:
        return np.array([float(j * self.step + self.start) for j in range(size)])


@dataclass(frozen=True)
class TileCore:
    """The part of the input a tile answers for, in input coordinates; ``None`` is unbounded.

    Used by :meth:`NcnnNet.run` to count each position of a pooled feature map exactly once
    across a grid of overlapping tiles.
    """

    y: tuple[float | None, float | None] = (None, None)
    x: tuple[float | None, float | None] = (None, None)


@dataclass
class PooledSum:
    """What one tile contributes to a global average pooling: per-channel sum and count."""

    total: torch.Tensor  # (N, C) float64
    count: int


def _activation(x: torch.Tensor, kind: int, params: tuple[float, ...], where: str) -> torch.Tensor:
    if kind == 0:
        return x
    if kind == 1:
        return F.relu_(x)
    if kind == 2:
        return F.leaky_relu_(x, params[0] if params else 0.0)
    if kind == 3:
        return x.clamp_(params[0], params[1])
    if kind == 4:
        return torch.sigmoid_(x)
    if kind == 5:
        return F.mish(x)
    if kind == 6:
        alpha = params[0] if len(params) > 0 else 0.2
        beta = params[1] if len(params) > 1 else 0.5
        return x * (x * alpha + beta).clamp_(0, 1)
    raise ModelError(f"ncnn layer {where}: activation type {kind} is not supported")


def _pads(layer: NcnnLayer) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) with ncnn's defaults: each falls back to the previous one."""
    left = layer.int_param(4, 0)
    right = layer.int_param(15, left)
    top = layer.int_param(14, left)
    bottom = layer.int_param(16, top)
    if min(left, right, top, bottom) < 0:
        raise ModelError(f"ncnn layer {layer.name!r}: 'same' padding modes are not supported")
    return left, right, top, bottom


@dataclass(frozen=True)
class _SubPixelAxis:
    """One axis of a stride-s transposed convolution rewritten as a convolution.

    Output pixel ``y = s*m + r`` of a transposed convolution (kernel k, crop ``lo`` at the
    start) sums input pixels ``m + d`` with kernel tap ``t = r + lo - s*d`` for every d that
    puts t inside the kernel. Over all phases r, d spans ``first .. first + taps - 1``: a plain
    convolution with ``taps`` taps and ``s`` output channels per channel (one per phase),
    followed by interleaving the phases, gives the same numbers.
    """

    stride: int
    kernel: int
    lo: int
    hi: int
    first: int
    taps: int

    @classmethod
    def make(cls, stride: int, kernel: int, lo: int, hi: int) -> _SubPixelAxis:
        ds = [(r + lo - t) // stride for r in range(stride) for t in range(kernel) if (r + lo - t) % stride == 0]
        return cls(stride, kernel, lo, hi, min(ds), max(ds) - min(ds) + 1)

    def tap(self, phase: int, index: int) -> int | None:
        t = phase + self.lo - self.stride * (self.first + index)
        return t if 0 <= t < self.kernel else None

    def plan(self, n: int) -> tuple[int, int, int, int, int]:
        """(pad before, pad after, first conv output, conv outputs kept, output length)."""
        length = (n - 1) * self.stride + self.kernel - self.lo - self.hi
        phases = -(-length // self.stride)
        before = max(0, -self.first)
        after = max(0, phases - 1 + self.first + self.taps - 1 - (n - 1))
        return before, after, self.first + before, phases, length


def _subpixel_weight(weight: torch.Tensor, ay: _SubPixelAxis, ax: _SubPixelAxis) -> torch.Tensor:
    """(in, out, kh, kw) transposed-convolution weight -> (out*sy*sx, in, ty, tx) conv weight."""
    cin, cout = weight.shape[:2]
    out = weight.new_zeros(cout, ay.stride, ax.stride, cin, ay.taps, ax.taps)
    for ry in range(ay.stride):
        for rx in range(ax.stride):
            for iy in range(ay.taps):
                ty = ay.tap(ry, iy)
                for ix in range(ax.taps):
                    tx = ax.tap(rx, ix)
                    if ty is not None and tx is not None:
                        out[:, ry, rx, :, iy, ix] = weight[:, :, ty, tx].T
    return out.reshape(cout * ay.stride * ax.stride, cin, ay.taps, ax.taps).contiguous()


class NcnnNet(nn.Module):
    """An ncnn graph with its weights, run with PyTorch operations.

    ``forward(x)`` feeds the first ``Input`` blob and returns the last layer's first output.
    Intermediate blobs are freed as soon as their last reader has run, so peak memory is that of
    the widest point of the graph, not the sum of all layers.
    """

    def __init__(self, layers: Sequence[NcnnLayer], weights: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        super().__init__()
        self.layers = list(layers)
        inputs = [layer for layer in self.layers if layer.type == "Input"]
        if not inputs:
            raise ModelError("the ncnn graph has no Input layer")
        self.input_blob = inputs[0].outputs[0]
        self.output_blob = self.layers[-1].outputs[0]
        self._keys: dict[tuple[str, str], str] = {}
        self._subpixel: dict[str, tuple[_SubPixelAxis, _SubPixelAxis]] = {}
        for index, layer in enumerate(self.layers):
            self._check(layer)
            for blob, array in weights.get(layer.name, {}).items():
                key = f"l{index}_{blob}"
                self._keys[(layer.name, blob)] = key
                self.register_buffer(key, torch.from_numpy(np.ascontiguousarray(array)).float())
        self._shape_weights()
        produced: set[str] = set()
        for layer in self.layers:
            missing = [blob for blob in layer.inputs if blob not in produced]
            if missing:
                raise ModelError(f"ncnn layer {layer.name!r} reads {missing[0]!r} before any layer writes it")
            produced.update(layer.outputs)
        # Where each blob is read for the last time, to free it right after.
        self._last_use: dict[str, int] = {}
        for index, layer in enumerate(self.layers):
            for blob in layer.inputs:
                self._last_use[blob] = index
        self.pooling_layers = [
            layer.name for layer in self.layers if layer.type == "Pooling" and layer.int_param(4, 0)
        ]

    # -- construction ------------------------------------------------------------------------

    def _check(self, layer: NcnnLayer) -> None:
        kind, where = layer.type, repr(layer.name)
        if kind in ("Convolution", "Deconvolution"):
            if layer.int_param(7, 1) != 1:
                raise ModelError(f"ncnn layer {where}: grouped convolutions are not supported")
            if any(layer.int_param(key, 0) for key in (18, 19, 20, 21)) and kind == "Deconvolution":
                raise ModelError(f"ncnn layer {where}: deconvolution output padding/size is not supported")
            if kind == "Convolution" and layer.int_param(19, 0):
                raise ModelError(f"ncnn layer {where}: dynamic weights are not supported")
            _pads(layer)
        elif kind == "Pooling":
            if not layer.int_param(4, 0):
                raise ModelError(f"ncnn layer {where}: only global pooling is supported")
            if layer.int_param(0, 0) not in (0, 1):
                raise ModelError(f"ncnn layer {where}: pooling type {layer.int_param(0, 0)} is not supported")
        elif kind == "Eltwise":
            if layer.int_param(0, 1) not in (0, 1, 2):
                raise ModelError(f"ncnn layer {where}: eltwise operation {layer.int_param(0, 1)} is not supported")
        elif kind == "Crop":
            if len(layer.inputs) != 2 or layer.int_param(2, 0):
                raise ModelError(f"ncnn layer {where}: only two-blob spatial Crop is supported")
        elif kind == "Scale":
            if layer.int_param(0, 0) != -233 and len(layer.inputs) != 1:
                raise ModelError(f"ncnn layer {where}: unexpected Scale inputs")
        elif kind not in _WEIGHTLESS | {"InnerProduct"}:
            raise ModelError(f"ncnn layer type {kind!r} (layer {where}) is not supported")

    def _weight(self, layer: NcnnLayer, blob: str) -> torch.Tensor | None:
        key = self._keys.get((layer.name, blob))
        return None if key is None else getattr(self, key)

    def _shape_weights(self) -> None:
        """Reshape the flat weight arrays into PyTorch's layouts, checking their sizes."""
        for layer in self.layers:
            weight = self._weight(layer, "weight")
            if weight is None:
                continue
            out = layer.int_param(0, 0)
            if layer.type == "InnerProduct":
                shaped = weight.reshape(out, -1)
            else:
                kw = layer.int_param(1, 0)
                kh = layer.int_param(11, kw)
                if weight.numel() % (out * kh * kw):
                    raise ModelError(f"ncnn layer {layer.name!r}: weight size does not match its shape")
                shaped = weight.reshape(out, -1, kh, kw)
                if layer.type == "Deconvolution":
                    # ncnn keeps [out][in][kh][kw] and scatters without flipping, which is
                    # exactly conv_transpose2d once the first two axes are swapped.
                    shaped = shaped.transpose(0, 1)
                    if layer.int_param(2, 1) == 1 and layer.int_param(12, 1) == 1:
                        # PyTorch's CPU conv_transpose2d is slower than the equivalent
                        # sub-pixel convolution on the fast convolution kernels (CPU time
                        # here: 119 vs 100 ms for upconv_7's last layer at 256 px, 36 vs
                        # 13 ms for cunet's 128-channel 2x2 ones at 52 px).
                        left, right, top, bottom = _pads(layer)
                        sw = layer.int_param(3, 1)
                        ay = _SubPixelAxis.make(layer.int_param(13, sw), kh, top, bottom)
                        ax = _SubPixelAxis.make(sw, kw, left, right)
                        self._subpixel[layer.name] = (ay, ax)
                        shaped = _subpixel_weight(shaped, ay, ax)
                        bias = self._weight(layer, "bias")
                        if bias is not None:
                            key = self._keys[(layer.name, "bias")]
                            setattr(self, key, bias.repeat_interleave(ay.stride * ax.stride).contiguous())
            setattr(self, self._keys[(layer.name, "weight")], shaped.contiguous())

    # -- running ------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[0]

    @torch.inference_mode()
    def run(
        self,
        x: torch.Tensor,
        *,
        origin: tuple[int, int] = (0, 0),
        pooled: Mapping[str, torch.Tensor] | None = None,
        collect: str | None = None,
        core: TileCore | None = None,
    ) -> tuple[torch.Tensor, PooledSum | None]:
        """Run the graph on ``x`` (N, C, H, W).

        For tiled inference: ``origin`` is where ``x`` sits in the whole (padded) input;
        ``pooled`` maps global-pooling layer names to the whole image's pooled values (N, C),
        used instead of the tile's own; with ``collect`` set to a pooling layer, the run stops
        there and returns that layer's sum over the positions whose centres fall in ``core``.
        """
        pooled = pooled or {}
        blobs: dict[str, torch.Tensor] = {}
        axes: dict[str, tuple[_Axis, _Axis]] = {}
        for index, layer in enumerate(self.layers):
            kind = layer.type
            if kind == "Input":
                blobs[layer.outputs[0]] = x
                axes[layer.outputs[0]] = (
                    _Axis(Fraction(1), Fraction(origin[0])),
                    _Axis(Fraction(1), Fraction(origin[1])),
                )
                continue
            ins = [blobs[name] for name in layer.inputs]
            axis = axes.get(layer.inputs[0])
            if kind == "Pooling" and layer.name == collect:
                assert axis is not None
                return ins[0], _owned_sum(ins[0], axis, core or TileCore(), layer.name)
            if kind == "Pooling" and layer.name in pooled:
                outs = [pooled[layer.name].to(ins[0].device, ins[0].dtype)]
            else:
                outs = self._layer(layer, ins)
            for name, value in zip(layer.outputs, outs, strict=True):
                blobs[name] = value
            if axis is not None and outs[0].dim() == 4:
                new_axis = self._axis(layer, axis, [axes.get(name) for name in layer.inputs])
                for name in layer.outputs:
                    axes[name] = new_axis
            for name in layer.inputs:
                if self._last_use[name] == index:
                    del blobs[name]
                    axes.pop(name, None)
        if collect is not None:
            raise ModelError(f"the ncnn graph has no global pooling layer {collect!r}")
        return blobs[self.output_blob], None

    def _axis(
        self, layer: NcnnLayer, axis: tuple[_Axis, _Axis], inputs: list[tuple[_Axis, _Axis] | None]
    ) -> tuple[_Axis, _Axis]:
        ay, ax = axis
        if layer.type in ("Convolution", "Deconvolution"):
            kw = layer.int_param(1, 0)
            kh = layer.int_param(11, kw)
            dw = layer.int_param(2, 1)
            dh = layer.int_param(12, dw)
            sw = layer.int_param(3, 1)
            sh = layer.int_param(13, sw)
            left, _, top, _ = _pads(layer)
            step = _Axis.conv if layer.type == "Convolution" else _Axis.deconv
            return step(ay, kh, sh, dh, top), step(ax, kw, sw, dw, left)
        if layer.type == "Crop":
            return ay.shift(layer.int_param(1, 0)), ax.shift(layer.int_param(0, 0))
        return ay, ax

    def _layer(self, layer: NcnnLayer, ins: list[torch.Tensor]) -> list[torch.Tensor]:
        kind = layer.type
        n_out = len(layer.outputs)
        if kind == "Split":
            return [ins[0]] * n_out  # read-only aliases; layers never write into their inputs
        if kind in ("Noop", "Dropout"):
            return [ins[0]]
        if kind == "Convolution":
            x = ins[0]
            left, right, top, bottom = _pads(layer)
            if left or right or top or bottom:
                x = F.pad(x, (left, right, top, bottom), value=layer.float_param(18, 0.0))
            sw = layer.int_param(3, 1)
            dw = layer.int_param(2, 1)
            y = F.conv2d(
                x,
                self._weight(layer, "weight"),
                self._weight(layer, "bias"),
                stride=(layer.int_param(13, sw), sw),
                dilation=(layer.int_param(12, dw), dw),
            )
            return [_activation(y, layer.int_param(9, 0), layer.array_param(10), repr(layer.name))]
        if kind == "Deconvolution" and layer.name in self._subpixel:
            y = self._subpixel_forward(layer, ins[0])
            return [_activation(y, layer.int_param(9, 0), layer.array_param(10), repr(layer.name))]
        if kind == "Deconvolution":
            sw = layer.int_param(3, 1)
            dw = layer.int_param(2, 1)
            y = F.conv_transpose2d(
                ins[0],
                self._weight(layer, "weight"),
                self._weight(layer, "bias"),
                stride=(layer.int_param(13, sw), sw),
                dilation=(layer.int_param(12, dw), dw),
            )
            left, right, top, bottom = _pads(layer)
            if left or right or top or bottom:
                height, width = y.shape[-2:]
                y = y[..., top : height - bottom, left : width - right].contiguous()
            return [_activation(y, layer.int_param(9, 0), layer.array_param(10), repr(layer.name))]
        if kind == "ReLU":
            slope = layer.float_param(0, 0.0)
            x = ins[0].clone()
            return [F.leaky_relu_(x, slope) if slope else F.relu_(x)]
        if kind == "Sigmoid":
            return [torch.sigmoid(ins[0])]
        if kind == "Pooling":
            x = ins[0]
            if layer.int_param(0, 0) == 1:
                return [x.mean(dim=(2, 3))]
            return [x.amax(dim=(2, 3))]
        if kind == "InnerProduct":
            x = ins[0].flatten(1)
            y = F.linear(x, self._weight(layer, "weight"), self._weight(layer, "bias"))
            return [_activation(y, layer.int_param(9, 0), layer.array_param(10), repr(layer.name))]
        if kind == "Scale":
            x = ins[0]
            if layer.int_param(0, 0) == -233:
                scale = ins[1].flatten(1)
            else:
                scale = self._weight(layer, "scale").unsqueeze(0)
            y = x * scale[:, :, None, None]
            bias = self._weight(layer, "bias")
            if bias is not None:
                y += bias[None, :, None, None]
            return [y]
        if kind == "Crop":
            x, reference = ins
            top, left = layer.int_param(1, 0), layer.int_param(0, 0)
            height, width = reference.shape[-2:]
            if top + height > x.shape[-2] or left + width > x.shape[-1]:
                raise ModelError(
                    f"ncnn layer {layer.name!r}: crop of {height}x{width} at ({top}, {left}) does not "
                    f"fit its {x.shape[-2]}x{x.shape[-1]} input (input size not aligned?)"
                )
            return [x[:, : reference.shape[1], top : top + height, left : left + width]]
        if kind == "Eltwise":
            op = layer.int_param(0, 1)
            coeffs = layer.array_param(1) if 1 in layer.params else ()
            if op == 1:
                if coeffs:
                    y = ins[0] * coeffs[0]
                    for c, x in zip(coeffs[1:], ins[1:], strict=True):
                        y = y + x * c
                    return [y]
                y = ins[0] + ins[1]
                for x in ins[2:]:
                    y += x
                return [y]
            y = ins[0]
            for x in ins[1:]:
                y = y * x if op == 0 else torch.maximum(y, x)
            return [y]
        raise ModelError(f"ncnn layer type {kind!r} is not supported")  # pragma: no cover

    def _subpixel_forward(self, layer: NcnnLayer, x: torch.Tensor) -> torch.Tensor:
        ay, ax = self._subpixel[layer.name]
        before_y, after_y, first_y, keep_y, height = ay.plan(x.shape[-2])
        before_x, after_x, first_x, keep_x, width = ax.plan(x.shape[-1])
        if before_y or after_y or before_x or after_x:
            x = F.pad(x, (before_x, after_x, before_y, after_y))
        y = F.conv2d(x, self._weight(layer, "weight"), self._weight(layer, "bias"))
        y = y[..., first_y : first_y + keep_y, first_x : first_x + keep_x]
        n, channels = y.shape[:2]
        out = channels // (ay.stride * ax.stride)
        # (N, out*sy*sx, H, W) -> (N, out, H*sy, W*sx): interleave the phases.
        y = y.reshape(n, out, ay.stride, ax.stride, keep_y, keep_x).permute(0, 1, 4, 2, 5, 3)
        y = y.reshape(n, out, keep_y * ay.stride, keep_x * ax.stride)
        return y[..., :height, :width].contiguous()

    # -- shape arithmetic ----------------------------------------------------------------------

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The output's (H, W) for an input of (height, width), by shape arithmetic alone.

        Raises :class:`ModelError` when that input does not fit the graph (too small, or a
        skip connection whose sides do not line up).
        """
        sizes: dict[str, tuple[int, int] | None] = {}
        for layer in self.layers:
            if layer.type == "Input":
                sizes[layer.outputs[0]] = (height, width)
                continue
            ins = [sizes[name] for name in layer.inputs]
            size = ins[0]
            if layer.type in ("Convolution", "Deconvolution") and size is not None:
                kw = layer.int_param(1, 0)
                kh = layer.int_param(11, kw)
                dw = layer.int_param(2, 1)
                dh = layer.int_param(12, dw)
                sw = layer.int_param(3, 1)
                sh = layer.int_param(13, sw)
                left, right, top, bottom = _pads(layer)
                if layer.type == "Convolution":
                    size = (
                        (size[0] + top + bottom - dh * (kh - 1) - 1) // sh + 1,
                        (size[1] + left + right - dw * (kw - 1) - 1) // sw + 1,
                    )
                else:
                    size = (
                        (size[0] - 1) * sh + dh * (kh - 1) + 1 - top - bottom,
                        (size[1] - 1) * sw + dw * (kw - 1) + 1 - left - right,
                    )
            elif layer.type == "Crop" and size is not None and ins[1] is not None:
                top, left = layer.int_param(1, 0), layer.int_param(0, 0)
                if top + ins[1][0] > size[0] or left + ins[1][1] > size[1]:
                    raise ModelError(f"input {width}x{height} does not fit the graph (at {layer.name!r})")
                size = ins[1]
            elif layer.type == "Eltwise" and any(other != size for other in ins):
                raise ModelError(f"input {width}x{height} does not fit the graph (at {layer.name!r})")
            elif layer.type in ("Pooling", "InnerProduct"):
                size = None
            if size is not None and min(size) < 1:
                raise ModelError(f"input {width}x{height} is too small for the graph (at {layer.name!r})")
            for name in layer.outputs:
                sizes[name] = size
        out = sizes[self.output_blob]
        if out is None:
            raise ModelError("the ncnn graph does not produce an image")
        return out

    def geometry(self) -> tuple[int, int, int]:
        """(scale, shrink, alignment) of this fully convolutional graph, from its shapes.

        An input of side n (a multiple of ``alignment``) gives an output of side
        ``scale * n - 2 * shrink``: pad the input by ``shrink / scale`` on every side to get
        exactly ``scale`` times its size back. ``alignment`` is the largest stride (in input
        pixels) a blob sits behind; sides must be multiples of it for the skips to line up.
        """
        align = 1
        steps: dict[str, Fraction] = {self.input_blob: Fraction(1)}
        for layer in self.layers:
            if layer.type in ("Input", "Pooling", "InnerProduct") or layer.inputs[0] not in steps:
                continue
            step = steps[layer.inputs[0]]
            if layer.type == "Convolution":
                step *= layer.int_param(3, 1)
            elif layer.type == "Deconvolution":
                step /= layer.int_param(3, 1)
            for name in layer.outputs:
                steps[name] = step
            align = max(align, math.ceil(step))
        n1, n2 = 64 * align, 65 * align
        o1, o2 = self.output_size(n1, n1)[1], self.output_size(n2, n2)[1]
        scale = Fraction(o2 - o1, n2 - n1)
        if scale.denominator != 1 or scale < 1:
            raise ModelError("the ncnn graph does not scale its input by a whole factor")
        shrink = Fraction(int(scale) * n1 - o1, 2)
        if shrink.denominator != 1:
            raise ModelError("the ncnn graph shrinks its input unevenly")
        return int(scale), int(shrink), align


def _owned_sum(x: torch.Tensor, axis: tuple[_Axis, _Axis], core: TileCore, name: str) -> PooledSum:
    """Sum of ``x`` over the pixels whose input-space centres fall inside the tile's core."""
    masks = []
    for size, ax, (low, high) in zip(x.shape[-2:], axis, (core.y, core.x), strict=True):
        positions = ax.positions(int(size))
        # Every position the core claims must be inside this tile's window, or it would be
        # counted by no tile: the window must reach past the core on each bounded side.
        if (low is not None and positions[0] >= low) or (high is not None and positions[-1] < high):
            raise ModelError(f"tile margin too small for the pooling at {name!r}")
        mask = np.ones(int(size), dtype=bool)
        if low is not None:
            mask &= positions >= low
        if high is not None:
            mask &= positions < high
        masks.append(torch.from_numpy(mask).to(x.device))
    rows, cols = masks
    owned = x[:, :, rows][..., cols]
    return PooledSum(owned.double().sum(dim=(2, 3)), int(rows.sum()) * int(cols.sum()))


def load_ncnn(param: Path, bin: Path) -> NcnnNet:
    """Read an ncnn ``.param``/``.bin`` pair into an :class:`NcnnNet` (on the CPU, eval mode)."""
    layers = read_param(Path(param))
    data = Path(bin).read_bytes()
    net = NcnnNet(layers, read_weights(layers, data, source=str(bin)))
    return net.eval()
