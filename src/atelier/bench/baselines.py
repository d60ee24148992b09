"""Textbook baselines: each engine's network the way its public reference runs it.

``atelier bench record`` times every engine against one of these, in the same process and on the
same weights, so that its ratios say what Atelier's engineering buys over "the straightforward
PyTorch forward pass with default settings". They are written here from the papers' and the
reference repositories' published architectures (not copied), and deliberately keep the
references' habits:

* NCHW (contiguous) tensors, ``nn.ReflectionPad2d`` modules, PyTorch's own ``InstanceNorm2d``
  and ``nn.Upsample``/``F.interpolate``, grouped convs as plain ``nn.Conv2d(groups=...)``;
* ``torch.no_grad()`` (what the references' test scripts use), not ``torch.inference_mode``;
* no caching: every call encodes the photo and the style again; no tiling, no threads tuning.

The baselines take their weights from the loaded Atelier engine (``state_dict`` by the same key
names), so both sides compute the same picture; tests check that they agree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from atelier.art.blocks.vgg import LAYOUT, layer_index

Paint = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


# ----------------------------------------------------------------------------- AdaIN


def _calc_mean_std(feat: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    # Huang & Belongie's statistics: per-channel mean and sqrt(unbiased variance + eps).
    n, c = feat.shape[:2]
    var = feat.view(n, c, -1).var(dim=2) + eps
    return feat.view(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def adaptive_instance_normalization(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """AdaIN(x, y) = std(y) * (x - mean(x)) / std(x) + mean(y), written out as in the paper."""
    size = content.size()
    style_mean, style_std = _calc_mean_std(style)
    content_mean, content_std = _calc_mean_std(content)
    normalized = (content - content_mean.expand(size)) / content_std.expand(size)
    return normalized * style_std.expand(size) + style_mean.expand(size)


def _vgg_module(kind: str, in_channels: int, out_channels: int) -> nn.Module:
    if kind == "conv1x1":
        return nn.Conv2d(3, 3, kernel_size=1)
    if kind == "pad":
        return nn.ReflectionPad2d((1, 1, 1, 1))
    if kind == "conv":
        return nn.Conv2d(in_channels, out_channels, kernel_size=3)
    if kind == "relu":
        return nn.ReLU()
    return nn.MaxPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=True)


def vgg_sequential(state_dict: dict[str, torch.Tensor], *, up_to: str) -> nn.Sequential:
    """The normalised VGG-19 as one ``nn.Sequential`` cut after ``up_to`` (the reference's
    ``nn.Sequential(*list(vgg.children())[:31])`` for relu4_1)."""
    layers = LAYOUT[: layer_index(up_to) + 1]
    net = nn.Sequential(*(_vgg_module(x.kind, x.in_channels, x.out_channels) for x in layers))
    keep = {k: v for k, v in state_dict.items() if int(k.partition(".")[0]) < len(layers)}
    net.load_state_dict(keep, strict=True)
    return net.eval()


def adain_decoder_sequential(state_dict: dict[str, torch.Tensor]) -> nn.Sequential:
    """The decoder as the reference's ``nn.Sequential``: pad, conv, ReLU, and ``nn.Upsample``
    (nearest x2) where the indices leave a gap of four."""
    convs = sorted(
        (int(k.partition(".")[0]), v.shape[1], v.shape[0]) for k, v in state_dict.items() if k.endswith(".weight")
    )
    modules: dict[int, nn.Module] = {}
    for i, (index, c_in, c_out) in enumerate(convs):
        modules[index - 1] = nn.ReflectionPad2d((1, 1, 1, 1))
        modules[index] = nn.Conv2d(c_in, c_out, (3, 3))
        if i + 1 < len(convs):
            modules[index + 1] = nn.ReLU()
            if convs[i + 1][0] - index == 4:
                modules[index + 2] = nn.Upsample(scale_factor=2, mode="nearest")
    net = nn.Sequential(*(modules[i] for i in sorted(modules)))
    net.load_state_dict(state_dict, strict=True)
    return net.eval()


class TextbookAdaIN:
    """naoto0804/pytorch-AdaIN ``test.py``: encode the content AND the style with the VGG
    ``nn.Sequential`` every time, AdaIN, blend with alpha, decode; under ``torch.no_grad()``."""

    def __init__(self, engine: object) -> None:
        level = engine.level  # type: ignore[attr-defined]
        encoder = {k: v.detach().float().cpu() for k, v in engine.encoder.state_dict().items()}  # type: ignore[attr-defined]
        decoder = {k: v.detach().float().cpu() for k, v in engine.decoder.state_dict().items()}  # type: ignore[attr-defined]
        device = engine.device  # type: ignore[attr-defined]
        self.vgg = vgg_sequential(encoder, up_to=level).to(device)
        self.decoder = adain_decoder_sequential(decoder).to(device)

    def __call__(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        with torch.no_grad():
            content_f = self.vgg(content)
            style_f = self.vgg(style)
            feat = adaptive_instance_normalization(content_f, style_f)
            feat = feat * alpha + content_f * (1 - alpha)
            return self.decoder(feat).clamp(0, 1)


# ----------------------------------------------------------------------------- fast-style filters


class _ConvLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _ConvLayer(channels, channels, 3, 1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = _ConvLayer(channels, channels, 3, 1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + x


class _UpsampleConvLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, upsample: int | None) -> None:
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class TransformerNet(nn.Module):
    """Johnson et al.'s network as pytorch/examples ``fast_neural_style`` writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _ConvLayer(3, 32, 9, 1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = _ConvLayer(32, 64, 3, 2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = _ConvLayer(64, 128, 3, 2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (_ResidualBlock(128) for _ in range(5))
        self.deconv1 = _UpsampleConvLayer(128, 64, 3, 1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = _UpsampleConvLayer(64, 32, 3, 1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = _ConvLayer(32, 3, 9, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


class TextbookFilter:
    """pytorch/examples ``neural_style.py stylize``: the photo times 255 through the
    TransformerNet under ``torch.no_grad()``, clamped back to 0..1."""

    def __init__(self, engine: nn.Module) -> None:
        self.net = TransformerNet()
        state = {k: v.detach().float().cpu().contiguous() for k, v in engine.state_dict().items()}
        self.net.load_state_dict(state, strict=True)
        self.net.eval().to(engine.device)  # type: ignore[arg-type]

    def __call__(self, content: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.net(content * 255).clamp(0, 255) / 255


# ----------------------------------------------------------------------------- MicroAST


class _MicroConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv_layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_layer(self.reflection_pad(x))


class _MicroResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _MicroConv(64, 64, 3)
        self.conv2 = _MicroConv(64, 64, 3)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))

    def modulated(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # The paper's dynamic filters: each conv's output times w, plus its input times b.
        y = self.relu(self.conv1(x) * w + x * b)
        return x + self.conv2(y) * w + y * b


class _MicroEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(
            _MicroConv(3, 16, 9), nn.ReLU(),
            _MicroConv(16, 32, 3, 2, groups=16), nn.ReLU(),
            _MicroConv(32, 32, 1), nn.ReLU(),
            _MicroConv(32, 64, 3, 2, groups=32), nn.ReLU(),
            _MicroConv(64, 64, 1), nn.ReLU(),
            _MicroResidual(),
        )  # fmt: skip
        self.enc2 = nn.Sequential(_MicroResidual())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.enc1(x)
        return [f1, self.enc2(f1)]


class _MicroModulator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        for name in ("weight1", "bias1", "weight2", "bias2"):
            self.add_module(name, nn.Sequential(_MicroConv(64, 64, 3, groups=64), nn.AdaptiveAvgPool2d((1, 1))))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.weight1(feats[0]), self.bias1(feats[0]), self.weight2(feats[1]), self.bias2(feats[1])]


class _MicroDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dec1 = _MicroResidual()
        self.dec2 = _MicroResidual()
        self.dec3 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear"),
            _MicroConv(64, 32, 3, groups=32), nn.ReLU(),
            _MicroConv(32, 32, 1), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="bilinear"),
            _MicroConv(32, 16, 3, groups=16), nn.ReLU(),
            _MicroConv(16, 16, 1), nn.ReLU(),
            _MicroConv(16, 3, 9),
        )  # fmt: skip

    def forward(self, c: list[torch.Tensor], s: list[torch.Tensor], f: list[torch.Tensor], alpha: float) -> torch.Tensor:
        w1, b1, w2, b2 = f
        x = adaptive_instance_normalization(c[1], s[1])
        x = alpha * x + (1 - alpha) * c[1]
        x = self.dec1.modulated(x, w2, b2)
        y = adaptive_instance_normalization(x, s[0])
        y = alpha * y + (1 - alpha) * x
        y = self.dec2.modulated(y, w1, b1)
        return self.dec3(y)


class TextbookMicroAST:
    """EndyWon/MicroAST's test forward: both encoders, the modulator and the decoder on the whole
    image at once, every call, under ``torch.no_grad()``."""

    def __init__(self, engine: nn.Module) -> None:
        self.content_encoder = _MicroEncoder()
        self.style_encoder = _MicroEncoder()
        self.modulator = _MicroModulator()
        self.decoder = _MicroDecoder()
        device = engine.device  # type: ignore[attr-defined]
        for name in ("content_encoder", "style_encoder", "modulator", "decoder"):
            part = getattr(self, name)
            state = {k: v.detach().float().cpu().contiguous() for k, v in getattr(engine, name).state_dict().items()}
            part.load_state_dict(state, strict=True)
            part.eval().to(device)

    def __call__(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        with torch.no_grad():
            style_feats = self.style_encoder(style)
            content_feats = self.content_encoder(content)
            filters = self.modulator(style_feats)
            return self.decoder(content_feats, style_feats, filters, alpha).clamp(0, 1)


# ----------------------------------------------------------------------------- waifu2x


class TextbookUpConv7:
    """waifu2x's upconv_7 as a plain ``nn.Sequential`` (the network of nagadomi's waifu2x /
    nunif ``UpConv7``): six valid 3x3 convs with LeakyReLU(0.1), then a 4x4 stride-2
    ``ConvTranspose2d``; the whole image at once, replicate-padded by 7 pixels, under
    ``torch.no_grad()``. Weights are read from the same ncnn files as :class:`Upscaler`."""

    def __init__(self, param: Path, bin: Path, *, device: torch.device | str = "cpu") -> None:
        from atelier.art.blocks.ncnn_format import read_param, read_weights

        layers = [layer for layer in read_param(param) if layer.type in ("Convolution", "Deconvolution")]
        weights = read_weights(read_param(param), bin.read_bytes())
        modules: list[nn.Module] = []
        channels = 3
        for layer in layers:
            out = layer.int_param(0, 0)
            kernel = layer.int_param(1, 0)
            raw = weights[layer.name]
            if layer.type == "Convolution":
                conv: nn.Module = nn.Conv2d(channels, out, kernel)
                conv.weight.data.copy_(torch.from_numpy(raw["weight"]).view(out, channels, kernel, kernel))
                modules += [conv, nn.LeakyReLU(0.1, inplace=True)]
            else:
                stride, pad = layer.int_param(3, 1), layer.int_param(4, 0)
                conv = nn.ConvTranspose2d(channels, out, kernel, stride, pad)
                # ncnn keeps deconvolution weights [out][in][kh][kw]; PyTorch wants [in][out].
                conv.weight.data.copy_(torch.from_numpy(raw["weight"]).view(out, channels, kernel, kernel).transpose(0, 1))
                modules.append(conv)
            conv.bias.data.copy_(torch.from_numpy(raw["bias"]))
            channels = out
        self.net = nn.Sequential(*modules).eval().to(device)
        self.device = torch.device(device)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            padded = F.pad(image.to(self.device), (7, 7, 7, 7), mode="replicate")
            return self.net(padded).clamp(0, 1)
