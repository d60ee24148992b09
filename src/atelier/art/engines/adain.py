"""AdaIN: arbitrary style transfer in real time (Huang & Belongie, ICCV 2017).

Follows naoto0804/pytorch-AdaIN (``function.py``, ``net.py``, ``test.py``) and, for spatial
control, the authors' Torch ``test.lua``:

* the content photo and the style picture go through the normalised VGG-19 up to one level
  (relu4_1 for the official ``decoder.pth``);
* adaptive instance normalisation gives the photo's features the style's per-channel mean and
  standard deviation (``std = sqrt(unbiased var + eps)`` as the reference's ``calc_mean_std``);
* style interpolation is the weighted sum of the per-style AdaIN outputs, ``alpha`` blends the
  result with the photo's own features, and the decoder turns them back into a picture;
* with a mask, each region gets its own style (the content statistics are those of the region,
  as in ``test.lua``); ``preserve_color`` recolours the style with CORAL first.

Decoders: the official AdaIN ``decoder.pth`` (relu4_1 -> RGB) and the WCT feature inverters
``feature_invertor_conv{1,2,3}_1.pth`` load alike; the layout is read from the keys and shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from atelier.art.blocks.color import coral
from atelier.art.blocks.devices import resolve_device
from atelier.art.errors import ArtError, ImageError, ModelError
from atelier.art.blocks.padding import crop_to, pad_to_multiple
from atelier.art.engines.protocol import Stylizes, mask_batch, normalised_weights
from atelier.art.progress import Progress, ProgressCallback, no_progress
from atelier.art.blocks.upconv import cached_kernel, transposed_kernel, upsample_conv
from atelier.art.blocks.vgg import (
    DOWNLOAD_HINT,
    VGGEncoder,
    layer_channels,
    layer_downsampling,
    load_vgg,
)
from atelier.art.blocks.weights import read_state_dict

log = logging.getLogger(__name__)

EPS = 1e-5  # added to the variance before the square root, as the reference

# Decoder input depth -> the VGG tap it inverts.
_LEVEL_BY_CHANNELS = {64: "relu1_1", 128: "relu2_1", 256: "relu3_1", 512: "relu4_1"}

# (Sequential index, in, out) of every conv, in the layouts we know by name. Between two convs
# the gap is 3 (ReLU, pad) or 4 (ReLU, nearest x2, pad); index 0 is the first pad.
OFFICIAL_DECODER_CONVS: tuple[tuple[int, int, int], ...] = (
    (1, 512, 256), (5, 256, 256), (8, 256, 256), (11, 256, 256), (14, 256, 128),
    (18, 128, 128), (21, 128, 64), (25, 64, 64), (28, 64, 3),
)  # fmt: skip
WCT_INVERTER_CONVS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "relu1_1": ((1, 64, 3),),
    "relu2_1": ((1, 128, 64), (5, 64, 64), (8, 64, 3)),
    "relu3_1": ((1, 256, 128), (5, 128, 128), (8, 128, 64), (12, 64, 64), (15, 64, 3)),
}


# -- the operator ---------------------------------------------------------------------------------


def mean_std(feat: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and ``sqrt(var + eps)`` of (N, C, H, W) features.

    The variance is the unbiased one (torch's ``.var()`` default), as in the reference's
    ``calc_mean_std``; both results are shaped (N, C, 1, 1).
    """
    if feat.dim() != 4:
        raise ValueError(f"features must be (N, C, H, W), got {tuple(feat.shape)}")
    # Half-precision features (a CUDA engine after .half()) would overflow in the squares.
    wide = feat.float() if feat.dtype in (torch.float16, torch.bfloat16) else feat
    # Two passes (mean, then squared deviations) rather than torch.var_mean, whose one-pass
    # Welford kernel runs 6-14x slower on the CPU here; the rounding is alike (~1e-7 relative).
    count = feat.shape[2] * feat.shape[3]
    mean = wide.mean(dim=(2, 3), keepdim=True)
    var = (wide - mean).square_().sum(dim=(2, 3), keepdim=True).div_(count - 1)
    return mean.to(feat.dtype), (var + eps).sqrt().to(feat.dtype)


def _weighted_mean_std(
    feat: torch.Tensor, weight: torch.Tensor, eps: float = EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mean_std` over a region given by per-pixel weights (N|1, 1, H, W) in 0..1.

    For a 0/1 mask this is exactly ``mean_std`` of the selected pixels (unbiased variance, as
    the reference); soft weights generalise it with the weight sum as the pixel count.
    """
    dtype = feat.dtype
    if dtype in (torch.float16, torch.bfloat16):
        feat, weight = feat.float(), weight.float()
    total = weight.sum(dim=(2, 3), keepdim=True)
    mean = (feat * weight).sum(dim=(2, 3), keepdim=True) / total.clamp_min(1e-6)
    var = ((feat - mean).square() * weight).sum(dim=(2, 3), keepdim=True) / (total - 1).clamp_min(1.0)
    return mean.to(dtype), (var + eps).sqrt().to(dtype)


def adaptive_instance_norm(
    content_feat: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor, eps: float = EPS
) -> torch.Tensor:
    """AdaIN(x, y) = std(y) * (x - mean(x)) / std(x) + mean(y), per sample and channel.

    ``style_mean`` and ``style_std`` are (N or 1, C, 1, 1), from :func:`mean_std` of the style's
    features.
    """
    content_mean, content_std = mean_std(content_feat, eps)
    scale = style_std / content_std
    # One fused pass: x * scale + (mean_y - mean_x * scale).
    return torch.addcmul(style_mean - content_mean * scale, content_feat, scale)


# -- the decoder ----------------------------------------------------------------------------------


class Decoder(nn.Module):
    """relu{N}_1 features -> RGB: reflection-padded 3x3 convs, ReLUs, nearest x2 upsampling.

    Submodules sit at their Sequential indices, so ``state_dict()`` has the keys of the file it
    was built from (the official AdaIN ``decoder.pth`` or a WCT inverter).
    """

    def __init__(self, convs: Sequence[tuple[int, int, int]]) -> None:
        super().__init__()
        convs = tuple(convs)
        _check_conv_chain(convs)
        self.convs = convs
        self.level = _LEVEL_BY_CHANNELS[convs[0][1]]
        self.upsamplings = 0
        for i, (index, c_in, c_out) in enumerate(convs):
            self.add_module(str(index - 1), nn.ReflectionPad2d(1))
            self.add_module(str(index), nn.Conv2d(c_in, c_out, kernel_size=3))
            if i + 1 < len(convs):
                self.add_module(str(index + 1), nn.ReLU(inplace=True))
                if convs[i + 1][0] - index == 4:
                    self.add_module(str(index + 2), nn.Upsample(scale_factor=2, mode="nearest"))
                    self.upsamplings += 1
        if 2**self.upsamplings != layer_downsampling(self.level):
            raise ModelError(
                f"the decoder takes {self.level} features ({convs[0][1]} channels) but upsamples "
                f"{2**self.upsamplings}x where {layer_downsampling(self.level)}x is needed"
            )
        self.requires_grad_(False)
        self.eval()

    @property
    def layout(self) -> str:
        """A name for the layout, for logs: ``adain-decoder`` or ``wct-inverter-relu3_1``."""
        if self.convs == OFFICIAL_DECODER_CONVS:
            return "adain-decoder"
        if self.convs == WCT_INVERTER_CONVS.get(self.level):
            return f"wct-inverter-{self.level}"
        return f"decoder-{self.level}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The modules in order, except that each nearest-x2 upsampling, pad and conv run as
        one transposed conv on the small picture (:mod:`atelier.art.blocks.upconv`; the same sums,
        2.25x fewer multiplications), in channels-last memory (faster on CPUs)."""
        x = x.contiguous(memory_format=torch.channels_last)
        for i, (index, _, _) in enumerate(self.convs):
            conv = self._modules[str(index)]
            assert isinstance(conv, nn.Conv2d)
            if isinstance(self._modules.get(str(index - 2)), nn.Upsample):
                kernel = cached_kernel(self, str(index), conv.weight, _channels_last_transposed)
                x = upsample_conv(x, kernel, conv.bias)
            else:
                x = conv(F.pad(x, (1, 1, 1, 1), mode="reflect"))
            if i + 1 < len(self.convs):
                x = x.relu_()
        return x

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> Decoder:
        """Build the layout the keys and shapes describe, then load strictly."""
        decoder = cls(_convs_of_state_dict(state_dict))
        try:
            decoder.load_state_dict(dict(state_dict), strict=True)
        except RuntimeError as exc:
            raise ModelError(f"the decoder weights do not fit their own layout: {exc}") from exc
        return decoder

    @classmethod
    def random(cls, *, level: str = "relu4_1", seed: int = 0) -> Decoder:
        """The official AdaIN decoder (relu4_1) or a WCT inverter layout with random weights."""
        convs = OFFICIAL_DECODER_CONVS if level == "relu4_1" else WCT_INVERTER_CONVS.get(level)
        if convs is None:
            raise ValueError(f"no decoder layout for {level!r}")
        decoder = cls(convs)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for index, c_in, _ in convs:
                conv = decoder.get_submodule(str(index))
                he_std = (2.0 / (9 * c_in)) ** 0.5
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * he_std)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.01)
        return decoder


def _channels_last_transposed(weight: torch.Tensor) -> torch.Tensor:
    return transposed_kernel(weight).contiguous(memory_format=torch.channels_last)


def _check_conv_chain(convs: Sequence[tuple[int, int, int]]) -> None:
    if not convs or convs[0][0] != 1:
        raise ModelError("the decoder weights must start with a conv at index 1 (after a pad)")
    if convs[0][1] not in _LEVEL_BY_CHANNELS:
        raise ModelError(
            f"the decoder takes {convs[0][1]} channels, which matches no VGG level "
            f"(64, 128, 256 or 512 for relu1_1 ... relu4_1)"
        )
    for (index, _, c_out), (next_index, next_in, _) in zip(convs, convs[1:]):
        if next_index - index not in (3, 4):
            raise ModelError(
                f"the decoder weights have an unknown layer between {index} and {next_index}"
            )
        if c_out != next_in:
            raise ModelError(
                f"the decoder's layer {index} gives {c_out} channels, "
                f"layer {next_index} takes {next_in}"
            )
    if convs[-1][2] != 3:
        raise ModelError(f"the decoder ends with {convs[-1][2]} channels, not RGB")


def _convs_of_state_dict(state_dict: Mapping[str, torch.Tensor]) -> list[tuple[int, int, int]]:
    convs: dict[int, tuple[int, int]] = {}
    for key, tensor in state_dict.items():
        head, _, tail = key.partition(".")
        if not head.isdigit() or tail not in ("weight", "bias"):
            raise ModelError(
                f"the decoder weights have an unexpected key {key!r}; expected AdaIN's decoder.pth "
                "or a WCT feature_invertor layout (keys like '1.weight', '5.weight')"
            )
        if tail == "weight":
            if tensor.dim() != 4 or tuple(tensor.shape[2:]) != (3, 3):
                raise ModelError(f"the decoder's {key} is {tuple(tensor.shape)}, not a 3x3 conv")
            convs[int(head)] = (int(tensor.shape[1]), int(tensor.shape[0]))
    if not convs:
        raise ModelError("the decoder weights hold no conv layers")
    return [(index, c_in, c_out) for index, (c_in, c_out) in sorted(convs.items())]


def load_decoder(path: str | Path, *, device: str | torch.device = "cpu") -> Decoder:
    """Load ``decoder.pth`` or ``feature_invertor_conv{1,2,3}_1.pth``; the level comes with it."""
    decoder = Decoder.from_state_dict(read_state_dict(path, what="AdaIN decoder", hint=DOWNLOAD_HINT))
    log.debug("loaded %s from %s", decoder.layout, path)
    return decoder.to(resolve_device(device))


# -- the engine -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContentFeatures:
    """A batch of photos encoded at the decoder's level (cache it by the photo's hash)."""

    features: torch.Tensor  # (N, C, h, w): the encoding of the padded photos
    size: tuple[int, int]  # (H, W) of the photos before padding

    @property
    def batch(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True, slots=True)
class StyleStatistics:
    """What AdaIN keeps of a style picture: per-channel mean and std at the level (N|1, C, 1, 1).

    A batch of more than one comes from :func:`coral`-recoloured styles (one per photo).
    """

    mean: torch.Tensor
    std: torch.Tensor




class AdaIN(Stylizes):
    """The AdaIN engine (implements :class:`atelier.art.engines.protocol.StyleEngine`).

    Built from a :class:`VGGEncoder` reaching ``level`` and a :class:`Decoder` that inverts it.
    Content and style tensors are float RGB in 0..1; results come back clamped to 0..1 at the
    photo's exact size.
    """

    name = "adain"

    def __init__(self, encoder: VGGEncoder, decoder: Decoder, *, level: str | None = None) -> None:
        level = level or decoder.level
        if decoder.level != level:
            raise ModelError(f"the decoder inverts {decoder.level} features, not {level}")
        if level not in encoder.available_layers:
            raise ModelError(
                f"the decoder works on {level} features but the VGG weights end at "
                f"{encoder.last_layer}; {level} needs the full vgg_normalised.pth; {DOWNLOAD_HINT}"
            )
        # Channels-last weights for the channels-last activations (see VGGEncoder.forward).
        self.encoder = encoder.to(memory_format=torch.channels_last)
        self.decoder = decoder.to(memory_format=torch.channels_last)
        self.level = level
        # Pad photos to this multiple so the decoder's upsampling lands on their exact size.
        self.multiple = layer_downsampling(level)
        self.channels = layer_channels(level)

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """What inputs are converted to: the networks' parameter type (float32 unless changed)."""
        return next(self.decoder.parameters()).dtype

    def to(self, device: str | torch.device, *, dtype: torch.dtype | None = None) -> AdaIN:
        """Move both networks (in place), optionally to another float type, and return the engine.

        ``dtype=torch.float16`` suits a CUDA GPU; statistics are still taken in float32. Keep
        float32 on the CPU: torch's CPU build runs half and bfloat16 convolutions on a slow
        generic path (measured here about 50x slower than float32).
        """
        device = resolve_device(device)
        self.encoder.to(device=device, dtype=dtype, memory_format=torch.channels_last)
        self.decoder.to(device=device, dtype=dtype, memory_format=torch.channels_last)
        return self

    # -- the three steps ----------------------------------------------------------------------

    def encode_content(
        self, content: torch.Tensor, *, own_style: bool = True, progress: ProgressCallback | None = None
    ) -> ContentFeatures:
        """Features of a batch of photos (N, 3, H, W) in 0..1, padded for the decoder.
        ``own_style`` is the protocol's: AdaIN has no part that encodes the photo as a style."""
        image = self._image_batch(content, "content")
        with torch.inference_mode():
            padded, size = pad_to_multiple(image, self.multiple)
            features = self.encoder.encode(padded, self.level)
        if progress is not None:
            progress(Progress(stage="encode content", step=1, total=1))
        return ContentFeatures(features=features, size=size)

    def encode_style(
        self, style: torch.Tensor, *, color_of: torch.Tensor | None = None
    ) -> StyleStatistics:
        """Statistics of a style picture (1, 3, h, w) in 0..1, any size.

        With ``color_of`` (photos, (N, 3, H, W)), the style is first recoloured to each photo's
        colours with :func:`coral` (the reference's ``--preserve_color``), giving N statistics.
        """
        image = self._image_batch(style, "style")
        with torch.inference_mode():
            if color_of is not None:
                image = coral(image, self._image_batch(color_of, "content"))
            mean, std = mean_std(self.encoder.encode(image, self.level))
        return StyleStatistics(mean=mean, std=std)

    def blend(
        self,
        content: ContentFeatures,
        styles: Sequence[StyleStatistics],
        *,
        style_weights: Sequence[float] | None = None,
        alpha: float = 1.0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The target features the decoder paints: AdaIN per style, interpolated, alpha-blended.

        Without a mask: ``sum_k w_k AdaIN(c, s_k)`` with the weights normalised to sum to 1
        (equal weights by default), as the reference's ``style_transfer(interpolation_weights)``.
        With a mask (see :meth:`decode`) each region is AdaIN'd with its own style using the
        region's own content statistics (``test.lua``), and soft masks blend the regions.
        Then ``alpha * target + (1 - alpha) * c``.
        """
        if not 0.0 <= alpha <= 1.0:
            raise ArtError(f"alpha (the strength of the style) must be between 0 and 1, got {alpha}")
        if not styles:
            raise ArtError("give at least one style")
        feats = content.features
        with torch.inference_mode():
            if mask is None:
                weights = normalised_weights(style_weights, len(styles))
                content_mean, content_std = mean_std(self._unpadded(feats, content.size))
                # AdaIN is affine per channel, so the weighted sum of K AdaIN outputs and the
                # alpha blend fold into one scale and shift: one pass over the feature map.
                scale = torch.zeros_like(content_std)
                shift = torch.zeros_like(content_mean)
                for weight, stats in zip(weights, styles):
                    ratio = stats.std / content_std
                    scale = scale + weight * ratio
                    shift = shift + weight * (stats.mean - content_mean * ratio)
            else:
                if style_weights is not None:
                    raise ArtError("give either style weights or a mask, not both")
                scale, shift = self._masked_scale_shift(feats, styles, mask, content.size)
            scale = alpha * scale + (1.0 - alpha)
            shift = alpha * shift
            return torch.addcmul(shift, feats, scale)

    def decode(
        self,
        content: ContentFeatures,
        styles: list[StyleStatistics],
        *,
        style_weights: list[float] | None = None,
        alpha: float = 1.0,
        mask: torch.Tensor | None = None,
        progress: ProgressCallback | None = None,
    ) -> torch.Tensor:
        """The stylized batch (N, 3, H, W), clamped to 0..1, on the engine's device.

        ``style_weights`` interpolate between several styles. ``mask`` (the photo's H x W, values
        0..1; shaped (H, W), (1|N, 1, H, W) or (1|N, K, H, W)) gives spatial control:

        * one channel and two styles: style 0 where the mask is 1, style 1 where it is 0 (the
          paper's Fig. 10 foreground/background);
        * one channel and one style: the style where the mask is 1, the photo kept elsewhere;
        * K channels for K styles: per-pixel weights; where they sum to less than 1 the rest is
          the photo, where they sum to more they are normalised.

        Soft values blend. ``alpha`` applies on top.
        """
        progress = progress or no_progress
        target = self.blend(content, styles, style_weights=style_weights, alpha=alpha, mask=mask)
        with torch.inference_mode():
            out = self.decoder(target)
            out = crop_to(out, content.size).float().clamp_(0.0, 1.0)
        progress(Progress(stage="decode", step=1, total=1))
        return out

    # -- helpers ------------------------------------------------------------------------------

    def _image_batch(self, image: torch.Tensor, what: str) -> torch.Tensor:
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[1] != 3:
            raise ImageError(
                f"the {what} image must be RGB, shaped (N, 3, H, W); got {tuple(image.shape)}"
            )
        height, width = image.shape[-2:]
        # Every reflection pad in the network needs at least 2 pixels at the deepest level.
        smallest = self.multiple + 1
        if min(height, width) < smallest:
            raise ImageError(
                f"the {what} image is {width}x{height} px; AdaIN at {self.level} needs at least "
                f"{smallest} px on each side"
            )
        return image.to(device=self.device, dtype=self.dtype)

    def _unpadded(self, feats: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The feature cells that overlap the photo, leaving out those of the padded margin.

        The content statistics come from these only, as the reference (which never pads) takes
        them from the photo alone; the margin is still decoded, then cropped off.
        """
        height, width = (-(-side // self.multiple) for side in size)
        return feats[..., :height, :width]

    def _masked_scale_shift(
        self,
        feats: torch.Tensor,
        styles: Sequence[StyleStatistics],
        mask: torch.Tensor,
        size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        regions = self._mask_regions(mask, size, styles, feats.shape[-2:])
        scale = torch.zeros_like(feats)
        shift = torch.zeros_like(feats)
        for weight, stats in regions:
            if stats is None:  # this region keeps the photo
                scale = scale + weight
                continue
            region_mean, region_std = _weighted_mean_std(
                self._unpadded(feats, size), self._unpadded(weight, size)
            )
            ratio = stats.std / region_std
            scale = scale + weight * ratio
            shift = shift + weight * (stats.mean - region_mean * ratio)
        return scale, shift

    def _mask_regions(
        self,
        mask: torch.Tensor,
        size: tuple[int, int],
        styles: Sequence[StyleStatistics],
        feature_size: torch.Size,
    ) -> list[tuple[torch.Tensor, StyleStatistics | None]]:
        """(weight map at feature resolution, style or None for 'keep the photo') per region."""
        mask = mask_batch(mask, size)
        mask = mask.to(device=self.device, dtype=self.dtype).clamp(0.0, 1.0)
        # Pad like the photo, then average each multiple x multiple cell: the share of the cell
        # the mask covers. (test.lua takes the nearest mask pixel instead; the area average gives
        # the same on a 0/1 mask aligned with the cells, and a soft seam elsewhere.)
        padded, _ = pad_to_multiple(mask, self.multiple, mode="replicate")
        weights = F.avg_pool2d(padded, self.multiple) if self.multiple > 1 else padded
        if tuple(weights.shape[-2:]) != tuple(feature_size):  # pragma: no cover - by construction
            raise AssertionError(f"mask {tuple(weights.shape)} != features {tuple(feature_size)}")
        channels = weights.shape[1]
        if channels == 1 and len(styles) == 2:
            return [(weights, styles[0]), (1.0 - weights, styles[1])]
        if channels == 1 and len(styles) != 1:
            raise ArtError(f"a one-channel mask takes one or two styles, got {len(styles)}")
        if channels != len(styles):
            raise ArtError(
                f"the mask has {channels} channels for {len(styles)} styles; give one per style"
            )
        # Weights summing to more than 1 are normalised; what is left below 1 keeps the photo.
        total = weights.sum(dim=1, keepdim=True)
        weights = weights / total.clamp_min(1.0)
        regions: list[tuple[torch.Tensor, StyleStatistics | None]] = [
            (weights[:, k : k + 1], stats) for k, stats in enumerate(styles)
        ]
        rest = (1.0 - total).clamp_min(0.0)
        if bool((rest > 0).any()):
            regions.append((rest, None))
        return regions


def load_adain(
    *, vgg: str | Path, decoder: str | Path, device: str | torch.device = "cpu"
) -> AdaIN:
    """The AdaIN engine from a VGG file and a decoder file; the decoder decides the level.

    The official ``decoder.pth`` works at relu4_1 and needs the full ``vgg_normalised.pth``; the
    WCT ``feature_invertor_convN_1.pth`` work at reluN_1 and need only ``vgg_normalised_convN_1``
    (or any deeper prefix). Only as much VGG as the level needs is kept.
    """
    dec = load_decoder(decoder, device="cpu")
    try:
        enc = load_vgg(vgg, up_to=dec.level, device="cpu")
    except ModelError as exc:
        if "needs the full" in str(exc):
            raise ModelError(
                f"the decoder {Path(decoder).name} works on {dec.level} features: {exc}"
            ) from exc
        raise
    engine = AdaIN(enc, dec)
    log.info("AdaIN at %s (%s)", dec.level, dec.layout)
    return engine.to(device)
