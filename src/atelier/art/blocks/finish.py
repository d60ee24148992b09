"""What a print shop does to a painting before it goes out: colour lift, smoothing, watermark.

Each step is a pure function of a PIL image with keyword-only parameters, and a
:class:`FinishSpec` holds one style's choice of all of them (read from the style's TOML with
:meth:`FinishSpec.from_dict`). :func:`finish` applies them in a fixed order -- levels, adjust,
smooth, watermark -- and takes ``watermark=False`` for the paid high-resolution output, which
must be the same picture without the mark.

Smoothing is a guided filter (He, Sun and Tang, 2010/2013) implemented with PyTorch box filters
rather than OpenCV's bilateral filter: it needs nothing outside the core dependencies (OpenCV is
only in the video extra), costs the same for any radius, and unlike the bilateral filter does
not reverse gradients next to strong edges (no halos on the painted strokes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

Position = Literal[
    "top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right"
]
POSITIONS: tuple[str, ...] = (
    "top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right",
)

# Rec. 601 luma, the weights PIL's convert("L") and ImageEnhance use.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _to_float(image: Image.Image) -> np.ndarray:
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.float32) / 255.0


def _to_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------------------------
# Colour


def auto_levels(image: Image.Image, *, clip_percent: float = 0.5, per_channel: bool = False) -> Image.Image:
    """Stretch the tones so the darkest and lightest ``clip_percent`` % of values clip.

    By default all three channels share one black and one white point, which lifts a flat
    painting without shifting its colours; ``per_channel=True`` also neutralises a colour cast
    (Photoshop's "enhance per channel contrast"). An image with (almost) one tone is returned
    unchanged rather than blown up.
    """
    if not 0 <= clip_percent < 50:
        raise ValueError(f"clip_percent must be in [0, 50), got {clip_percent}")
    rgb = _to_float(image)
    if per_channel:
        lows = np.percentile(rgb.reshape(-1, 3), clip_percent, axis=0)
        highs = np.percentile(rgb.reshape(-1, 3), 100 - clip_percent, axis=0)
    else:
        lows = np.full(3, np.percentile(rgb, clip_percent))
        highs = np.full(3, np.percentile(rgb, 100 - clip_percent))
    spans = highs - lows
    if np.any(spans < 1 / 255):
        return image.convert("RGB") if image.mode != "RGB" else image.copy()
    return _to_image((rgb - lows) / spans)


def adjust(
    image: Image.Image, *, saturation: float = 1.0, gamma: float = 1.0, contrast: float = 1.0
) -> Image.Image:
    """Gamma, contrast and saturation, in that order. 1.0 leaves each unchanged.

    ``gamma`` > 1 lifts the midtones (``v ** (1 / gamma)``: black and white stay put);
    ``contrast`` scales the distance from the image's mean grey; ``saturation`` scales the
    distance from each pixel's own grey (0 gives a black-and-white picture).
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    if saturation < 0 or contrast < 0:
        raise ValueError("saturation and contrast cannot be negative")
    rgb = _to_float(image)
    if gamma != 1.0:
        rgb = np.power(rgb, 1.0 / gamma)
    if contrast != 1.0:
        mean = float((rgb @ _LUMA).mean())
        rgb = mean + contrast * (rgb - mean)
    if saturation != 1.0:
        grey = (rgb @ _LUMA)[..., None]
        rgb = grey + saturation * (rgb - grey)
    return _to_image(rgb)


# --------------------------------------------------------------------------------------------
# Smoothing


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, shrunk at the borders (separable: O(r) per pixel)."""
    k = 2 * radius + 1
    x = F.avg_pool2d(x, (k, 1), stride=1, padding=(radius, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, k), stride=1, padding=(0, radius), count_include_pad=False)


def smooth(image: Image.Image, *, strength: float = 0.0, radius: int = 4) -> Image.Image:
    """Edge-preserving smoothing: a self-guided filter on each channel.

    ``strength`` is the size of the tonal variation (0..1 scale) that counts as texture: ripples
    well below it are flattened, steps well above it (edges, strokes) are kept. 0.02-0.05 takes
    out grain and optimisation noise; 0.1-0.2 gives a smooth, poster-like paint. ``radius``
    (pixels) is how far the averaging reaches; scale it with the image size. 0 strength is a
    no-op.
    """
    if strength < 0 or radius < 0:
        raise ValueError("strength and radius cannot be negative")
    if strength == 0 or radius == 0:
        return image.convert("RGB") if image.mode != "RGB" else image.copy()
    x = torch.from_numpy(_to_float(image)).permute(2, 0, 1).unsqueeze(1)  # (3, 1, H, W)
    eps = strength * strength
    mean = _box(x, radius)
    var = (_box(x * x, radius) - mean * mean).clamp_(min=0)
    a = var / (var + eps)  # ~1 across edges (keep), ~0 in flat texture (average)
    b = mean - a * mean
    out = _box(a, radius) * x + _box(b, radius)
    return _to_image(out.squeeze(1).permute(1, 2, 0).numpy())


# --------------------------------------------------------------------------------------------
# Watermark

_FONT_PX = 160  # text is drawn big once, then resized: crisp at any size, any font backend


def _text_mark(text: str, color: tuple[int, int, int]) -> Image.Image:
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=_FONT_PX)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font, scaled up below
        font = ImageFont.load_default()
    stroke = max(1, _FONT_PX // 24)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font, stroke_width=stroke)
    mark = Image.new("RGBA", (right - left + 2 * stroke, bottom - top + 2 * stroke), (0, 0, 0, 0))
    draw = ImageDraw.Draw(mark)
    # A dark outline keeps light text readable on light paintings too.
    draw.text(
        (stroke - left, stroke - top), text, font=font, fill=(*color, 255),
        stroke_width=stroke, stroke_fill=(0, 0, 0, 140),
    )
    return mark


def watermark_layer(
    size: tuple[int, int],
    *,
    text: str | None = None,
    logo: Image.Image | None = None,
    position: Position = "bottom-right",
    opacity: float = 0.35,
    scale: float = 0.25,
    tiled: bool = False,
    angle: float = 0.0,
    margin: float = 0.03,
    color: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """The watermark alone: a transparent RGBA image of ``size`` (width, height).

    ``scale`` is the mark's width as a fraction of the image width; ``margin`` its distance
    from the edges as a fraction of the shorter side; ``angle`` rotates it (degrees,
    counter-clockwise); ``tiled`` repeats it over the whole picture in staggered rows.
    """
    if (text is None or not text.strip()) and logo is None:
        raise ValueError("a watermark needs a text or a logo")
    if not 0 < opacity <= 1:
        raise ValueError(f"opacity must be in (0, 1], got {opacity}")
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {', '.join(POSITIONS)}; got {position!r}")
    width, height = size
    mark = logo.convert("RGBA") if logo is not None else _text_mark(str(text), color)
    target = max(1, round(width * scale))
    mark = mark.resize((target, max(1, round(mark.height * target / mark.width))), Image.Resampling.LANCZOS)
    if angle:
        # Premultiplied, so the transparent corners do not bleed black into the edges.
        mark = mark.convert("RGBa").rotate(angle, resample=Image.Resampling.BICUBIC, expand=True).convert("RGBA")
    alpha = mark.getchannel("A").point(lambda v: round(v * opacity))
    mark.putalpha(alpha)
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    if tiled:
        step_x = max(1, round(mark.width * 1.5))
        step_y = max(1, round(mark.height * 2.0))
        for row, y in enumerate(range(-mark.height // 2, height, step_y)):
            shift = (step_x // 2) * (row % 2)
            for x in range(-mark.width // 2 - shift, width, step_x):
                _composite(layer, mark, x, y)
        return layer
    gap = round(min(width, height) * margin)
    vertical, _, horizontal = position.partition("-") if "-" in position else (position, "", position)
    x = {"left": gap, "right": width - mark.width - gap}.get(horizontal, (width - mark.width) // 2)
    y = {"top": gap, "bottom": height - mark.height - gap}.get(vertical, (height - mark.height) // 2)
    _composite(layer, mark, x, y)
    return layer


def _composite(layer: Image.Image, mark: Image.Image, x: int, y: int) -> None:
    # alpha_composite refuses negative offsets, so crop what hangs over the top/left edge;
    # paste() with a mask would square the mark's alpha.
    left, top = max(0, -x), max(0, -y)
    if left >= mark.width or top >= mark.height:
        return
    layer.alpha_composite(mark.crop((left, top, mark.width, mark.height)), dest=(x + left, y + top))


def watermark(
    image: Image.Image,
    *,
    text: str | None = None,
    logo: Image.Image | None = None,
    position: Position = "bottom-right",
    opacity: float = 0.35,
    scale: float = 0.25,
    tiled: bool = False,
    angle: float = 0.0,
    margin: float = 0.03,
    color: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """The image with a text or logo mark blended in (see :func:`watermark_layer`)."""
    base = image.convert("RGBA")
    layer = watermark_layer(
        base.size, text=text, logo=logo, position=position, opacity=opacity, scale=scale,
        tiled=tiled, angle=angle, margin=margin, color=color,
    )
    return Image.alpha_composite(base, layer).convert("RGB")


# --------------------------------------------------------------------------------------------
# One style's finishing


@dataclass(frozen=True)
class Watermark:
    """A style's watermark: a text or a logo file, and where and how it sits."""

    text: str | None = None
    logo: Path | None = None
    position: Position = "bottom-right"
    opacity: float = 0.35
    scale: float = 0.25
    tiled: bool = False
    angle: float = 0.0
    margin: float = 0.03
    color: tuple[int, int, int] = (255, 255, 255)

    def apply(self, image: Image.Image) -> Image.Image:
        logo = None
        if self.logo is not None:
            with Image.open(self.logo) as opened:
                logo = opened.convert("RGBA")
        return watermark(
            image, text=self.text, logo=logo, position=self.position, opacity=self.opacity,
            scale=self.scale, tiled=self.tiled, angle=self.angle, margin=self.margin, color=self.color,
        )


@dataclass(frozen=True)
class FinishSpec:
    """All finishing parameters of a style. The defaults change nothing (and add no mark)."""

    auto_levels: bool = False
    clip_percent: float = 0.5
    per_channel: bool = False
    saturation: float = 1.0
    gamma: float = 1.0
    contrast: float = 1.0
    smooth_strength: float = 0.0
    smooth_radius: int = 4
    #: The waifu2x denoise level of the high-resolution upscale (atelier.art.engines.upscale): -1 none,
    #: 0 (light) .. 3. None for paintings: denoising smooths the brushwork away (a 512 px
    #: MicroAST painting doubled with upconv_7_photo and shrunk back is 45.7 dB from itself with
    #: none, 42.6 with level 0, 37.0 with level 2; note of issue 15). A style whose grain should
    #: go may ask for a level; nothing else reads it.
    denoise: int = -1
    watermark: Watermark | None = field(default=None)

    def __post_init__(self) -> None:
        if isinstance(self.denoise, bool) or self.denoise not in (-1, 0, 1, 2, 3):
            raise ValueError(f"finish denoise must be -1 (none) or a waifu2x level 0..3, not {self.denoise!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: Path | None = None) -> FinishSpec:
        """From a TOML table: ``[finish]`` keys plus an optional ``[finish.watermark]`` table.

        Unknown keys are refused (a typo must not silently do nothing); a relative logo path
        is taken from ``base_dir`` (the style's folder).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown finish setting(s): {', '.join(unknown)}")
        values = dict(data)
        mark = values.pop("watermark", None)
        if mark is not None:
            mark_known = {f.name for f in fields(Watermark)}
            bad = sorted(set(mark) - mark_known)
            if bad:
                raise ValueError(f"unknown watermark setting(s): {', '.join(bad)}")
            mark = dict(mark)
            if mark.get("logo") is not None:
                logo = Path(mark["logo"])
                mark["logo"] = (base_dir / logo) if base_dir is not None and not logo.is_absolute() else logo
            if "color" in mark:
                mark["color"] = tuple(mark["color"])
            mark = Watermark(**mark)
        return cls(**values, watermark=mark)


def finish(image: Image.Image, spec: FinishSpec, *, watermark: bool = True) -> Image.Image:
    """Apply a style's finishing: levels -> adjust -> smooth -> watermark (if ``watermark``).

    ``finish(image, spec, watermark=False)`` is exactly the watermarked picture without its
    mark: the paid high-resolution output.
    """
    out = image.convert("RGB") if image.mode != "RGB" else image
    if spec.auto_levels:
        out = auto_levels(out, clip_percent=spec.clip_percent, per_channel=spec.per_channel)
    if (spec.saturation, spec.gamma, spec.contrast) != (1.0, 1.0, 1.0):
        out = adjust(out, saturation=spec.saturation, gamma=spec.gamma, contrast=spec.contrast)
    if spec.smooth_strength > 0:
        out = smooth(out, strength=spec.smooth_strength, radius=spec.smooth_radius)
    if watermark and spec.watermark is not None:
        out = spec.watermark.apply(out)
    return out.copy() if out is image else out


__all__ = [
    "POSITIONS",
    "FinishSpec",
    "Watermark",
    "adjust",
    "auto_levels",
    "finish",
    "smooth",
    "watermark",
    "watermark_layer",
]
