"""MicroAST (Wang et al., "MicroAST: Towards Super-Fast Ultra-Resolution Arbitrary Style Transfer",
AAAI 2023): a 0.47 M-parameter arbitrary-style network that needs no VGG at inference.

Built from the description in ../shared/models/MODELS.md (section 2) and checked against the
official ``net_microAST.py`` (EndyWon/MicroAST); module names follow the official files so they
strict-load (``enc1.0.conv_layer.weight``, ...).

* Two micro encoders of the same shape (content and style, different weights): a 9x9 conv, two
  stride-2 depthwise-separable stages and a residual block give ``f1`` at 1/4 resolution; one more
  residual block gives ``f2``.
* A modulator turns the style features into per-channel filter modulations: a depthwise 3x3 conv
  and a global average pool for each of ``w1, b1`` (from ``s1``) and ``w2, b2`` (from ``s2``).
* The decoder: AdaIN(c2, s2), a residual block whose convolution outputs are modulated by
  (w2, b2), AdaIN with s1, a residual block modulated by (w1, b1), then two bilinear x2
  upsamplings with depthwise-separable convs and a 9x9 conv to RGB. AdaIN uses the unbiased
  variance with eps 1e-5 added before the square root, as upstream.

Where this differs from the official code:

* The decoder never reads the content's first-level features ``c1`` (upstream computes and
  ignores them), so :class:`MicroASTContent` keeps only ``c2``: a cached photo costs 16 bytes per
  pixel instead of 32.
* Ultra-resolution. The paper runs whole 4K images on an 8 GB GPU. Here an image too big to
  hold at once is processed in overlapping tiles (``tile=`` on every step; automatic by size).
  The networks are fully convolutional; only AdaIN looks at the whole image, so its statistics
  are gathered in a pass of their own over the tiles (sums in float64) and every tile is then
  normalised with the global statistics. Tile origins sit on the stride-4 grid and every halo is
  wider than the receptive field it must cover, so a tiled result equals the untiled one up to
  float rounding -- no seams, unlike patch-wise methods that normalise each patch on its own.
* ``alpha`` blends the style's signals with the photo's own (the photo encoded as a style),
  not features with features as upstream does: with the official weights upstream's blend
  breaks down for any alpha below 1 (see :meth:`MicroAST.decode`).
* Activations are channels-last and the grouped convs with two inputs per output run as
  depthwise convs plus a sum (see :class:`_Conv`): faster on CPU, the same arithmetic.
* Several styles and spatial masks (neither is defined by the paper); see :meth:`MicroAST.decode`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from atelier.art.blocks.blockconv import block_conv, block_kernel
from atelier.art.blocks.color import coral
from atelier.art.errors import ArtError, ImageError, ModelError
from atelier.art.blocks.padding import pad_to_multiple
from atelier.art.engines.protocol import Stylizes, mask_batch, normalised_weights
from atelier.art.progress import Progress, ProgressCallback
from atelier.art.blocks.upconv import cached_kernel
from atelier.art.blocks.weights import read_state_dict


log = logging.getLogger(__name__)

CHANNELS = 64  # feature channels at 1/4 resolution (slim_factor 1 upstream)
_EPS = 1e-5  # added to the variance before the square root, as upstream calc_mean_std
_MULTIPLE = 4  # two stride-2 convs in, two x2 upsamplings out
_MIN_SIDE = 8  # quarter-resolution 3x3 reflection pads need 2 pixels

# Tiling. Halos are wider than the receptive fields they protect, so tiles are exact:
# encoder: 9x9 (4 px) + 3x3/2 (1) + 3x3/2 at 1/2 res (2) + four 3x3 at 1/4 res (16) = 23 px.
_ENCODER_HALO = 32  # full-resolution pixels, a multiple of 4 so tiles stay on the stride grid
# dec1: two 3x3 convs at 1/4 resolution.
_DEC1_HALO = 2  # quarter-resolution pixels
# dec2 (two 3x3 at 1/4 res, 8 px) + dec3 (bilinear edges, 3x3 at 1/2 and full res, 9x9): < 20 px.
_DEC_TAIL_HALO = 8  # quarter-resolution pixels (32 full-resolution)
#: tile=None keeps a batch whole up to this many (padded) pixels in all and cuts bigger ones into
#: tiles of :data:`AUTO_TILE` pixels (smaller for a batch). Decoding whole takes about 500 bytes
#: per pixel at its peak (measured), so this bounds it near 1.2 GB; 3415x2160 in 1024 px tiles
#: peaks at 1.5 GB for the whole process.
AUTO_TILE_MAX_PIXELS = 2_500_000
AUTO_TILE = 1024
#: The decoder's last stages (dec2, dec3: 1/2 and full resolution) hold most of that peak, and
#: only they are cut smaller when tile=None: each of their tiles needs just the 1/4-resolution
#: features around it (a halo of 8) and the global AdaIN coefficients, so tiling them costs a
#: few percent of extra arithmetic, where tiling the encoders (which gather statistics first)
#: costs far more. Above this many pixels per batch the tail runs in bands of at most this size.
#: 300 000 rather than 450 000 (issue 17, with the encoders' front banded alike): a one-off
#: 1024x1024 render's peak median 648 -> 561 MiB over 6 alternated runs, wall time unchanged.
AUTO_TAIL_TILE_PIXELS = 300_000
#: The encoders' full-resolution front runs in bands of at most this many pixels (one picture;
#: batches stay whole): see :meth:`_Encoder._front`.
AUTO_FRONT_BAND_PIXELS = 300_000
_FRONT = 4  # enc1's 9x9 conv, ReLU, stride-2 conv, ReLU
_FRONT_HALO = 8  # full-resolution pixels: the 9x9 conv reaches 4, the stride-2 3x3 one more; on the grid
#: The photo's own style signals (the alpha=0 end) are taken at this size at most, the size
#: style images are usually given at: big photos cost nothing extra and tiles cannot change them.
OWN_STYLE_SIZE = 512


# --------------------------------------------------------------------------------------------
# The networks (module names as in the official state_dicts)


class _Conv(nn.Module):
    """Reflection pad k//2, then a biased, possibly grouped Conv2d named ``conv_layer``.

    Activations run channels-last (NHWC), which oneDNN's CPU convolutions prefer: measured here
    on 2 cores it takes about a third off a 512 px stylization.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.pad = kernel_size // 2
        self.conv_layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride, groups=groups)
        # The decoder's 3x3 convs with two inputs per group and one output (64->32 in groups of
        # 32, 32->16 in groups of 16) are a slow path in oneDNN (about 5x slower than a
        # depthwise conv of the same size): run them as a depthwise conv over the inputs and
        # add the two halves of each group. Same sums, in another order.
        self.pairwise = groups > 1 and in_channels == 2 * groups and out_channels == groups
        # The last 9x9 conv to RGB (three outputs) is another slow path: on CPUs it runs on
        # 4x4 pixel blocks (atelier.art.blocks.blockconv; 2.5x faster here, the same sums).
        self.blocked = groups == 1 and out_channels <= 4 and kernel_size >= 5 and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
        x = x.contiguous(memory_format=torch.channels_last)
        conv = self.conv_layer
        if self.blocked and x.device.type == "cpu":
            kernel = cached_kernel(self, "blocks", conv.weight, _channels_last_blocks)
            return block_conv(x, kernel, conv.bias, block=_BLOCK, size=conv.kernel_size[0])
        if not self.pairwise:
            return conv(x)
        depthwise = conv.weight.reshape(conv.in_channels, 1, *conv.kernel_size)
        depthwise = depthwise.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, depthwise, None, conv.stride, 0, 1, conv.in_channels)
        return torch.add(y[:, 0::2], y[:, 1::2]).add_(conv.bias.view(1, -1, 1, 1))


_BLOCK = 4


def _channels_last_blocks(weight: torch.Tensor) -> torch.Tensor:
    return block_kernel(weight, _BLOCK).contiguous(memory_format=torch.channels_last)


class _Residual(nn.Module):
    """x + conv2(ReLU(conv1(x))) at 64 channels; the decoder's version is filter-modulated."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _Conv(CHANNELS, CHANNELS, 3)
        self.conv2 = _Conv(CHANNELS, CHANNELS, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))

    def modulated(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # The paper's filter modulation: each conv's output is scaled by the style's w and the
        # conv's own input, scaled by b, is added -- i.e. the kernel becomes w*K + b*identity.
        y = F.relu(torch.addcmul(bias * x, weight, self.conv1(x)))
        return x + torch.addcmul(bias * y, weight, self.conv2(y))


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(
            _Conv(3, 16, 9),
            nn.ReLU(inplace=True),
            _Conv(16, 32, 3, stride=2, groups=16),
            nn.ReLU(inplace=True),
            _Conv(32, 32, 1),
            nn.ReLU(inplace=True),
            _Conv(32, 64, 3, stride=2, groups=32),
            nn.ReLU(inplace=True),
            _Conv(64, 64, 1),
            nn.ReLU(inplace=True),
            _Residual(),
        )
        self.enc2 = nn.Sequential(_Residual())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f1 = self.enc1[_FRONT:](self._front(x))
        return f1, self.enc2(f1)

    def _front(self, x: torch.Tensor) -> torch.Tensor:
        """The full-resolution front (the 9x9 conv and the first stride-2 conv): half-resolution
        features of 32 channels. It holds most of an encoding's memory (its 16-channel
        full-resolution maps, padded and copied channels-last, about 200 bytes a pixel), so a
        single large picture runs it in bands across its longer side, each read with a halo
        wider than the two convolutions reach (exact, as the decoder tail's bands are); the
        rest of the encoder, at a quarter of the pixels, stays whole."""
        front = self.enc1[:_FRONT]
        n, _, height, width = x.shape
        pixels = n * height * width
        if n > 1 or pixels <= AUTO_FRONT_BAND_PIXELS or height % 2 or width % 2:
            return front(x)
        along_width = width >= height
        length = width if along_width else height
        bands = math.ceil(pixels / AUTO_FRONT_BAND_PIXELS)
        step = -(-math.ceil(length / bands) // _MULTIPLE) * _MULTIPLE  # on the stride grid
        out: torch.Tensor | None = None
        for start, stop, lo, hi in _bands(length, step, _FRONT_HALO):
            band = front(x[..., lo:hi] if along_width else x[..., lo:hi, :])
            if out is None:
                shape = (n, band.shape[1], height // 2, width // 2)
                out = torch.empty(shape, device=x.device, dtype=band.dtype, memory_format=torch.channels_last)
            inner = slice((start - lo) // 2, (stop - lo) // 2)
            part = band[..., inner] if along_width else band[..., inner, :]
            if along_width:
                out[..., start // 2 : stop // 2].copy_(part)
            else:
                out[..., start // 2 : stop // 2, :].copy_(part)
            del band, part
        assert out is not None
        return out


def _pooled_depthwise() -> nn.Sequential:
    return nn.Sequential(_Conv(CHANNELS, CHANNELS, 3, groups=CHANNELS), nn.AdaptiveAvgPool2d(1))


class _Modulator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight1 = _pooled_depthwise()
        self.bias1 = _pooled_depthwise()
        self.weight2 = _pooled_depthwise()
        self.bias2 = _pooled_depthwise()


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dec1 = _Residual()
        self.dec2 = _Residual()
        self.dec3 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            _Conv(64, 32, 3, groups=32),
            nn.ReLU(inplace=True),
            _Conv(32, 32, 1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            _Conv(32, 16, 3, groups=16),
            nn.ReLU(inplace=True),
            _Conv(16, 16, 1),
            nn.ReLU(inplace=True),
            _Conv(16, 3, 9),
        )


# --------------------------------------------------------------------------------------------
# What the engine caches


@dataclass(frozen=True, eq=False)
class MicroASTContent:
    """A batch of photos, encoded.

    ``features`` is c2 (N, 64, H'/4, W'/4) of the photos padded to H', W' (multiples of 4);
    ``size`` is the photos' own (H, W), which the output gets back; ``own_style`` holds each
    photo's own style signals (the photo encoded as a style image, fields shaped (N, 64)), the
    far end of ``alpha`` and the "keep the photo" part of masks (see :meth:`MicroAST.decode`);
    it is None only when :meth:`MicroAST.stylize` knew it would not be needed.
    """

    features: torch.Tensor
    size: tuple[int, int]
    own_style: MicroASTStyle | None

    @property
    def batch(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True, eq=False)
class MicroASTStyle:
    """Everything the decoder takes from one style image: vectors of 64 numbers each, shaped
    (64,) -- or (N, 64) when they are per photo of a batch (``MicroASTContent.own_style``, or a
    style recoloured to each photo by ``encode_style(color_of=...)``).

    ``mean1``/``std1`` and ``mean2``/``std2`` are the AdaIN statistics of the style features s1
    and s2; ``weight1``/``bias1`` (from s1) and ``weight2``/``bias2`` (from s2) are the
    modulator's filter modulations. A cached style costs about 2 KB and nothing more to use.
    """

    mean1: torch.Tensor
    std1: torch.Tensor
    mean2: torch.Tensor
    std2: torch.Tensor
    weight1: torch.Tensor
    bias1: torch.Tensor
    weight2: torch.Tensor
    bias2: torch.Tensor

    _FIELDS = ("mean1", "std1", "mean2", "std2", "weight1", "bias1", "weight2", "bias2")

    def to(self, device: torch.device | str) -> MicroASTStyle:
        return MicroASTStyle(*(getattr(self, name).to(device) for name in self._FIELDS))


def _stack_styles(
    styles: Sequence[MicroASTStyle], batch: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Each field as a (B, K, 64) tensor: K styles, B = 1 (shared) or the batch (per photo)."""
    stacked = {}
    for name in MicroASTStyle._FIELDS:
        fields = [getattr(s, name).reshape(-1, CHANNELS).to(device) for s in styles]
        rows = max(f.shape[0] for f in fields)
        if any(f.shape[0] not in (1, batch) for f in fields) or rows not in (1, batch):
            raise ArtError(f"a style was encoded for {rows} photos but the batch has {batch}")
        stacked[name] = torch.stack([f.expand(rows, -1) for f in fields], dim=1)
    return stacked


def _own_signals(content: MicroASTContent, device: torch.device) -> dict[str, torch.Tensor]:
    """The photos' own style signals as (N, 1, 64) tensors."""
    if content.own_style is None:
        raise ArtError("these photo features were encoded without their own style: use encode_content")
    own = content.own_style
    return {name: getattr(own, name).reshape(-1, 1, CHANNELS).to(device) for name in MicroASTStyle._FIELDS}


# --------------------------------------------------------------------------------------------
# Tiling and statistics


def _spans(length: int, tile: int) -> list[tuple[int, int]]:
    return [(start, min(start + tile, length)) for start in range(0, length, tile)]


def _bands(length: int, step: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Bands of ``step`` along ``length`` as (start, stop, read from, read to), every read window
    of one size: ``step`` + 2 ``halo``, shifted inwards at the ends (more real context, the same
    result). One shape matters twice: a process pays oneDNN's set-up of each convolution once
    per shape it meets, and the allocator reuses the freed blocks of one band for the next only
    when they are as big (a middle band with halos on both sides grew the heap by 30-60 MiB)."""
    size = min(length, step + 2 * halo)
    out = []
    for start, stop in _spans(length, step):
        low = min(max(0, start - halo), length - size)
        out.append((start, stop, low, low + size))
    return out


@dataclass(frozen=True, slots=True)
class _Tile:
    """A tile [y0:y1, x0:x1] and its haloed read window [hy0:hy1, hx0:hx1] (same units)."""

    y0: int
    y1: int
    x0: int
    x1: int
    hy0: int
    hy1: int
    hx0: int
    hx1: int

    def read(self, t: torch.Tensor) -> torch.Tensor:
        return t[..., self.hy0 : self.hy1, self.hx0 : self.hx1]

    def inner(self, t: torch.Tensor, scale: int = 1) -> torch.Tensor:
        """The tile itself out of a result computed on the haloed window (``scale`` x finer)."""
        top, left = (self.y0 - self.hy0) * scale, (self.x0 - self.hx0) * scale
        return t[..., top : top + (self.y1 - self.y0) * scale, left : left + (self.x1 - self.x0) * scale]

    def own(self, t: torch.Tensor) -> torch.Tensor:
        return t[..., self.y0 : self.y1, self.x0 : self.x1]


def _tiles(height: int, width: int, tile: int, halo: int, *, tile_x: int | None = None) -> list[_Tile]:
    """Tiles of ``tile`` rows by ``tile_x`` (default ``tile``) columns with their halos."""
    return [
        _Tile(y0, y1, x0, x1, max(0, y0 - halo), min(height, y1 + halo),
              max(0, x0 - halo), min(width, x1 + halo))
        for y0, y1 in _spans(height, tile)
        for x0, x1 in _spans(width, tile_x or tile)
    ]


def _tail_tiles(height: int, width: int, step: int, halo: int, *, tile: int | None, batch: int) -> list[_Tile]:
    """The decoder tail's tiles (quarter-resolution units): ``step`` squares when tiles were
    asked for or the batch is small, else the picture cut across its longer side into equal
    bands of at most :data:`AUTO_TAIL_TILE_PIXELS` (one picture; batches keep their tiles). Bands of one shape: a process
    that paints once pays oneDNN's set-up of every convolution once per shape it meets."""
    pixels = batch * height * width * 16
    if tile is not None or batch > 1 or pixels <= AUTO_TAIL_TILE_PIXELS or step < max(height, width):
        return _tiles(height, width, step, halo)
    bands = math.ceil(pixels / AUTO_TAIL_TILE_PIXELS)
    if width >= height:
        return [_Tile(0, height, x0, x1, 0, height, lo, hi) for x0, x1, lo, hi in _bands(width, math.ceil(width / bands), halo)]
    return [_Tile(y0, y1, 0, width, lo, hi, 0, width) for y0, y1, lo, hi in _bands(height, math.ceil(height / bands), halo)]


class _RegionStats:
    """Running sums for per-region, per-channel means and unbiased variances, in float64.

    Regions are the soft masks' channels (one region covering everything without a mask). With
    weights m the variance is sum m (x - mean)^2 / (V1 - V2 / V1), V1 = sum m, V2 = sum m^2:
    reliability weights, which gives exactly the unbiased n - 1 of upstream when m is 0 or 1.
    """

    def __init__(self, batch: int, regions: int, device: torch.device) -> None:
        opts = {"dtype": torch.float64, "device": device}
        self.v1 = torch.zeros(batch, regions, 1, **opts)
        self.v2 = torch.zeros(batch, regions, 1, **opts)
        self.s1 = torch.zeros(batch, regions, CHANNELS, **opts)
        self.s2 = torch.zeros(batch, regions, CHANNELS, **opts)

    def add(self, x: torch.Tensor, weights: torch.Tensor | None) -> None:
        x = x.double()
        if weights is None:
            count = x.shape[-1] * x.shape[-2]
            self.v1 += count
            self.v2 += count
            self.s1[:, 0] += x.sum((2, 3))
            self.s2[:, 0] += x.square().sum((2, 3))
            return
        m = weights.double().expand(x.shape[0], -1, -1, -1)
        self.v1 += m.sum((2, 3)).unsqueeze(-1)
        self.v2 += m.square().sum((2, 3)).unsqueeze(-1)
        self.s1 += torch.einsum("nkhw,nchw->nkc", m, x)
        self.s2 += torch.einsum("nkhw,nchw->nkc", m, x.square())

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, K, 64) means and standard deviations (float32)."""
        v1 = self.v1.clamp_min(1e-12)  # an empty region is never used; keep it finite
        mean = self.s1 / v1
        squares = (self.s2 - self.s1 * mean).clamp_min(0.0)
        var = squares / (v1 - self.v2 / v1).clamp_min(1e-12)
        return mean.float(), (var + _EPS).sqrt().float()


def _feature_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and sqrt(unbiased variance + eps) over H, W: (N, 64) each."""
    stats = _RegionStats(x.shape[0], 1, x.device)
    stats.add(x, None)
    mean, std = stats.mean_std()
    return mean[:, 0], std[:, 0]


def _per_pixel(coeffs: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """(N|1, K, 64) per-region coefficients -> (N|1, 64, 1, 1), or per pixel (N, 64, h, w) with masks."""
    if weights is None:
        return coeffs[:, 0, :, None, None]
    n = max(weights.shape[0], coeffs.shape[0])
    return torch.einsum("nkhw,nkc->nchw", weights.expand(n, -1, -1, -1), coeffs.expand(n, -1, -1))


# --------------------------------------------------------------------------------------------
# The engine


class MicroAST(nn.Module, Stylizes):
    """MicroAST as an :class:`atelier.art.engines.protocol.StyleEngine`. Build it with :func:`load_microast`.

    ``encode_content`` and ``encode_style`` return objects to cache (:class:`MicroASTContent`,
    :class:`MicroASTStyle`), ``decode`` paints. Everything happens on the engine's device under
    ``torch.inference_mode``; ``stylize`` is the one-call convenience.
    """

    name = "microast"

    def __init__(self) -> None:
        super().__init__()
        self.content_encoder = _Encoder()
        self.style_encoder = _Encoder()
        self.modulator = _Modulator()
        self.decoder = _Decoder()

    @property
    def device(self) -> torch.device:
        return self.decoder.dec1.conv1.conv_layer.weight.device

    # ---- encoders --------------------------------------------------------------------------

    def _encode(
        self,
        encoder: _Encoder,
        padded: torch.Tensor,
        *,
        tile: int | None,
        keep_f1: bool,
        stage: str,
        progress: ProgressCallback | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Run an encoder over an image padded to multiples of 4, whole or in exact tiles."""
        n, _, height, width = padded.shape
        step = _tile_size(tile, n, height, width)
        tiles = _tiles(height, width, step, _ENCODER_HALO)
        if len(tiles) == 1:
            f1, f2 = encoder(padded)
            _report(progress, stage, 1, 1)
            return (f1 if keep_f1 else None), f2
        quarter = (n, CHANNELS, height // 4, width // 4)
        f1_all = torch.empty(quarter, device=padded.device) if keep_f1 else None
        f2_all = torch.empty(quarter, device=padded.device)
        for index, t in enumerate(tiles, 1):
            f1, f2 = encoder(t.read(padded))
            q = _quarter(t)
            q.own(f2_all).copy_(q.inner(f2))
            if f1_all is not None:
                q.own(f1_all).copy_(q.inner(f1))
            del f1, f2
            _report(progress, stage, index, len(tiles))
        return f1_all, f2_all

    def _style_signals(self, image: torch.Tensor, *, tile: int | None) -> MicroASTStyle:
        """Style signals of a batch of images: fields shaped (N, 64)."""
        padded, _ = pad_to_multiple(image, _MULTIPLE, mode="reflect")
        s1, s2 = self._encode(
            self.style_encoder, padded, tile=tile, keep_f1=True, stage="style", progress=None
        )
        assert s1 is not None
        mod = self.modulator
        mean1, std1 = _feature_stats(s1)
        mean2, std2 = _feature_stats(s2)
        n = image.shape[0]
        return MicroASTStyle(
            mean1=mean1,
            std1=std1,
            mean2=mean2,
            std2=std2,
            weight1=mod.weight1(s1).reshape(n, CHANNELS),
            bias1=mod.bias1(s1).reshape(n, CHANNELS),
            weight2=mod.weight2(s2).reshape(n, CHANNELS),
            bias2=mod.bias2(s2).reshape(n, CHANNELS),
        )

    def encode_content(
        self,
        content: torch.Tensor,
        *,
        tile: int | None = None,
        progress: ProgressCallback | None = None,
        own_style: bool = True,
    ) -> MicroASTContent:
        """Encode a batch of photos (N, 3, H, W), RGB 0..1, any H, W >= 8. Cache the result.

        ``tile`` is the side of the square tiles, in pixels (a multiple of 4; None decides by
        size, see :data:`AUTO_TILE_MAX_PIXELS`). Tiling changes memory, not the result.
        ``own_style=False`` skips the photo's own style signals (a style encoder pass at up to
        512 px): only a decode at full strength without a mask may then use the result.
        """
        return self._encode_content(content, tile=tile, progress=progress, own_style=own_style)

    def _encode_content(
        self, content: torch.Tensor, *, tile: int | None, progress: ProgressCallback | None, own_style: bool
    ) -> MicroASTContent:
        _check_batch(content, what="photo")
        with torch.inference_mode():
            photo = content.to(self.device, torch.float32)
            padded, size = pad_to_multiple(photo, _MULTIPLE, mode="reflect")
            _, c2 = self._encode(
                self.content_encoder, padded, tile=tile, keep_f1=False, stage="encode", progress=progress
            )
            del padded
            own = self._style_signals(_shrink(photo, OWN_STYLE_SIZE), tile=None) if own_style else None
        return MicroASTContent(features=c2, size=(int(size[0]), int(size[1])), own_style=own)

    def encode_style(
        self, style: torch.Tensor, *, color_of: torch.Tensor | None = None, tile: int | None = None
    ) -> MicroASTStyle:
        """Encode one painting (1, 3, h, w), RGB 0..1, into its statistics and modulations.

        With ``color_of`` (photos, (N, 3, H, W)) the painting is first recoloured to each photo's
        colours with :func:`atelier.art.blocks.color.coral` (the AdaIN reference's
        ``--preserve_color``), giving signals per photo (fields (N, 64)).

        The painting is used at the size given (upstream's default); callers usually scale it to
        about 512 px on the short side first, as the AdaIN and MicroAST references do. Big
        paintings are encoded in tiles like photos (``tile``), so they cost memory, not failures.
        """
        _check_batch(style, what="style image")
        if style.shape[0] != 1:
            raise ArtError(f"encode_style takes one style image, got a batch of {style.shape[0]}")
        with torch.inference_mode():
            image = style.to(self.device, torch.float32)
            if color_of is not None:
                _check_batch(color_of, what="photo")
                image = coral(image, color_of.to(self.device, torch.float32))
            signals = self._style_signals(image, tile=tile)
        if color_of is not None:
            return signals
        return MicroASTStyle(*(getattr(signals, name)[0] for name in MicroASTStyle._FIELDS))

    # ---- decoder ---------------------------------------------------------------------------

    def decode(
        self,
        content: MicroASTContent,
        styles: Sequence[MicroASTStyle],
        *,
        style_weights: Sequence[float] | None = None,
        alpha: float = 1.0,
        mask: torch.Tensor | None = None,
        progress: ProgressCallback | None = None,
        tile: int | None = None,
    ) -> torch.Tensor:
        """Paint the encoded photos with one or more encoded styles: (N, 3, H, W) RGB in 0..1,
        at the photos' exact size, on the engine's device.

        ``alpha`` (0..1) is how much of the style to use. It blends the style signals -- both
        AdaIN targets and both filter modulations -- with the photo's own signals
        (``content.own_style``), so alpha=1 is the full stylization, alpha=0 MicroAST's
        reconstruction of the photo (the photo "stylized with itself"), and values between move
        smoothly from one to the other. This departs from the official code, whose alpha blends
        each AdaIN output with its input feature: the official weights were trained at alpha=1
        only and that blend throws the modulated decoder off its range -- at alpha=0.5,
        dog + starry_night comes out a flat cyan (values up to 14 before the clamp) and alpha=0
        a flat orange wash. At alpha=1 both agree.

        Several styles, no mask: the styles' signals (means, standard deviations, w, b) are
        mixed as a weighted sum with ``style_weights`` (normalised to sum to 1; equal by
        default) and the mixture decoded. The paper defines no interpolation; this one is linear
        in everything a style contributes, and at the AdaIN layers it is exactly the AdaIN
        reference's interpolation (a weighted sum of AdaIN outputs), since AdaIN is affine in
        the target mean and deviation.

        ``mask`` gives spatial control with the same meaning as in :mod:`atelier.art.engines.adain`
        (the AdaIN reference's ``test.lua`` masks): the photo's H x W, values 0..1, shaped
        (H, W), (1|N, 1, H, W) or (1|N, K, H, W):

        * one channel and two styles: style 0 where the mask is 1, style 1 where it is 0;
        * one channel and one style: the style where the mask is 1, the photo kept elsewhere;
        * K channels for K styles: per-pixel weights; where they sum to less than 1 the rest is
          the photo, where they sum to more they are normalised.

        "The photo" is MicroAST's reconstruction of it (its own signals, as at alpha=0). Both
        AdaIN layers take the photo's statistics inside each region (weighted by the mask, at
        the 1/4-resolution feature grid) and apply that region's style statistics there, and
        the filter modulations of the residual blocks become per-pixel mixtures of the regions'
        w, b. ``style_weights`` cannot be combined with a mask; ``alpha`` applies on top.

        ``tile`` as in :meth:`encode_content`; it changes memory, not the result.
        """
        styles = list(styles)
        if not styles:
            raise ArtError("give at least one style")
        if not all(isinstance(s, MicroASTStyle) for s in styles):
            raise TypeError("styles must come from MicroAST.encode_style")
        if not 0.0 <= alpha <= 1.0:
            raise ArtError(f"alpha (the strength of the style) must be between 0 and 1, got {alpha}")
        if mask is not None and style_weights is not None:
            raise ArtError("give either style weights or a mask, not both")
        with torch.inference_mode():
            features = content.features.to(self.device)
            n, _, h, w = features.shape
            signals = _stack_styles(styles, n, self.device)  # (1|N, K, 64)
            weights: torch.Tensor | None = None
            if mask is None:
                mix = torch.tensor(normalised_weights(style_weights, len(styles)), device=self.device)
                signals = {k: torch.einsum("k,bkc->bc", mix, v).unsqueeze(1) for k, v in signals.items()}
            else:
                weights, keeps_photo = _mask_weights(
                    mask, len(styles), content.size, (h * 4, w * 4), self.device
                )
                if keeps_photo:  # one more region, painted with the photo's own signals
                    own = _own_signals(content, self.device)  # (N, 1, 64)
                    signals = {k: torch.cat([v.expand(n, -1, -1), own[k]], dim=1) for k, v in signals.items()}
            if alpha < 1.0:
                own = _own_signals(content, self.device)
                signals = {k: torch.lerp(own[k], v, alpha) for k, v in signals.items()}  # (N, R, 64)
            regions = signals["mean1"].shape[1]

            step = _tile_size(tile, n, h * 4, w * 4) // 4
            own_tiles = _tiles(h, w, step, 0)
            dec1_tiles = _tiles(h, w, step, _DEC1_HALO)
            tail_tiles = _tail_tiles(h, w, step, _DEC_TAIL_HALO, tile=tile, batch=n)
            total = len(dec1_tiles) + len(tail_tiles)

            def tile_weights(t: _Tile, *, own: bool = False) -> torch.Tensor | None:
                return None if weights is None else (t.own(weights) if own else t.read(weights))

            # Pass 1: the photo's statistics (per region).
            content_stats = _RegionStats(n, regions, self.device)
            for t in own_tiles:
                content_stats.add(t.own(features), tile_weights(t, own=True))
            scale1, shift1 = _adain_coefficients(content_stats, signals["mean2"], signals["std2"])

            # Pass 2: AdaIN with s2 and the residual block modulated by (w2, b2).
            dec1 = self.decoder.dec1
            mid = torch.empty_like(features)
            mid_stats = _RegionStats(n, regions, self.device)
            for index, t in enumerate(dec1_tiles, 1):
                m = tile_weights(t)
                y = _adain(t.read(features), scale1, shift1, m)
                y = dec1.modulated(y, _per_pixel(signals["weight2"], m), _per_pixel(signals["bias2"], m))
                inner = t.inner(y)
                t.own(mid).copy_(inner)
                mid_stats.add(inner, tile_weights(t, own=True))
                del y, inner
                _report(progress, "decode", index, total)

            # Pass 3: AdaIN with s1, the block modulated by (w1, b1), upsampling to RGB.
            scale2, shift2 = _adain_coefficients(mid_stats, signals["mean1"], signals["std1"])
            dec2, dec3 = self.decoder.dec2, self.decoder.dec3
            height, width = content.size
            out = torch.empty(n, 3, height, width, device=self.device)
            for index, t in enumerate(tail_tiles, len(dec1_tiles) + 1):
                m = tile_weights(t)
                y = _adain(t.read(mid), scale2, shift2, m)
                y = dec2.modulated(y, _per_pixel(signals["weight1"], m), _per_pixel(signals["bias1"], m))
                y = t.inner(dec3(y), scale=4)
                # Crop to the photo's size: the last tiles may reach into the padding that made
                # the size a multiple of 4.
                top, left = t.y0 * 4, t.x0 * 4
                bottom, right = min(t.y1 * 4, height), min(t.x1 * 4, width)
                if bottom > top and right > left:
                    out[..., top:bottom, left:right] = y[..., : bottom - top, : right - left].clamp(0.0, 1.0)
                del y
                _report(progress, "decode", index, total)
            return out


# --------------------------------------------------------------------------------------------
# Helpers


def _check_batch(image: torch.Tensor, *, what: str) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ImageError(f"the {what} must be RGB, shaped (N, 3, H, W); got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ImageError(f"the {what} must be a float tensor in 0..1, got {image.dtype}")
    height, width = image.shape[-2:]
    if min(height, width) < _MIN_SIDE:
        raise ImageError(
            f"the {what} is {width}x{height} pixels; MicroAST needs at least {_MIN_SIDE}x{_MIN_SIDE}"
        )


def _tile_size(tile: int | None, batch: int, height: int, width: int) -> int:
    """The tile side in full-resolution pixels (a multiple of 4); the whole image if it fits."""
    if tile is None:
        if batch * height * width <= AUTO_TILE_MAX_PIXELS:
            return max(height, width)
        # A batch shares each tile position: keep batch x tile area near AUTO_TILE squared.
        tile = max(256, int(AUTO_TILE / math.sqrt(batch)) // _MULTIPLE * _MULTIPLE)
    if tile < 16 or tile % _MULTIPLE:
        raise ArtError(f"tile must be a multiple of {_MULTIPLE} and at least 16, got {tile}")
    return min(tile, max(height, width))


def _quarter(t: _Tile) -> _Tile:
    return _Tile(*(v // 4 for v in (t.y0, t.y1, t.x0, t.x1, t.hy0, t.hy1, t.hx0, t.hx1)))


def _report(progress: ProgressCallback | None, stage: str, step: int, total: int) -> None:
    if progress is not None:
        progress(Progress(stage, step, total))


def _adain_coefficients(
    stats: _RegionStats, style_mean: torch.Tensor, style_std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """AdaIN as y = scale * x + shift per region: scale = std_s / std_c, shift = mean_s - scale * mean_c."""
    mean, std = stats.mean_std()
    scale = style_std / std
    return scale, style_mean - scale * mean


def _adain(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    return torch.addcmul(_per_pixel(shift, weights), _per_pixel(scale, weights), x)


def _shrink(image: torch.Tensor, longest: int) -> torch.Tensor:
    """The image scaled down (antialiased) so its longer side is at most ``longest`` pixels."""
    height, width = image.shape[-2:]
    scale = longest / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(_MIN_SIDE, round(height * scale)), max(_MIN_SIDE, round(width * scale)))
    small = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    return small.clamp_(0.0, 1.0)


def _mask_weights(
    mask: torch.Tensor,
    count: int,
    size: tuple[int, int],
    padded: tuple[int, int],
    device: torch.device,
) -> tuple[torch.Tensor, bool]:
    """A user's mask -> per-region weights (1|N, R, H'/4, W'/4) and whether the last region is
    "keep the photo" (R = K + 1) -- the rules of :mod:`atelier.art.engines.adain`'s masks."""
    mask = mask_batch(mask, size)
    channels = mask.shape[1]
    if channels == 1 and count > 2:
        raise ArtError(f"a one-channel mask takes one or two styles, got {count}")
    if channels != 1 and channels != count:
        raise ArtError(f"the mask has {channels} channels for {count} styles; give one per style")
    mask = mask.to(device=device, dtype=torch.float32).nan_to_num(0.0).clamp(0.0, 1.0)
    pad_h, pad_w = padded[0] - size[0], padded[1] - size[1]
    if pad_h or pad_w:
        mask = F.pad(mask, (0, pad_w, 0, pad_h), mode="replicate")
    # Area-average each 4x4 cell of the 1/4-resolution features: the share of the cell the mask
    # covers (a hard edge that does not fall on the cell grid becomes a one-cell soft seam).
    weights = F.avg_pool2d(mask, _MULTIPLE)
    if channels == 1 and count == 2:
        return torch.cat([weights, 1.0 - weights], dim=1), False
    total = weights.sum(dim=1, keepdim=True)
    weights = weights / total.clamp_min(1.0)
    rest = (1.0 - total).clamp_min(0.0)
    if bool((rest > 0).any()):
        return torch.cat([weights, rest], dim=1), True
    return weights, False


def _load_part(module: nn.Module, path: Path, part: str) -> None:
    state = read_state_dict(path, what=f"MicroAST {part}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "keys do not match")
        if len(detail) > 160:
            detail = detail[:157] + "..."
        raise ModelError(f"{path.name} is not the MicroAST {part}: {detail}") from exc


def load_microast(
    *,
    content_encoder: str | Path,
    style_encoder: str | Path,
    modulator: str | Path,
    decoder: str | Path,
    device: str | torch.device = "cpu",
) -> MicroAST:
    """Load the four official MicroAST state_dicts (``*_iter_160000.pth.tar``, legacy torch
    serialization) into an engine on ``device``.

    A missing file raises :class:`ModelMissingError`; a file of another layout (or the two
    encoders swapped with another part) raises :class:`ModelError`.
    """
    engine = MicroAST()
    _load_part(engine.content_encoder, Path(content_encoder), "content encoder")
    _load_part(engine.style_encoder, Path(style_encoder), "style encoder")
    _load_part(engine.modulator, Path(modulator), "modulator")
    _load_part(engine.decoder, Path(decoder), "decoder")
    log.debug("loaded MicroAST from %s", Path(decoder).parent)
    return engine.eval().requires_grad_(False).to(device=device, memory_format=torch.channels_last)
