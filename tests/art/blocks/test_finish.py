"""Print-shop finishing: colour lift, edge-preserving smoothing, watermark, one spec per style."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atelier.art.blocks.finish import (
    FinishSpec,
    Watermark,
    adjust,
    auto_levels,
    finish,
    smooth,
    watermark,
    watermark_layer,
)


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


@pytest.fixture(scope="module")
def photo(content_dir: Path) -> Image.Image:
    with Image.open(content_dir / "golden_gate.jpg") as image:
        image = image.convert("RGB")
        image.thumbnail((256, 256))
        return image


def _flat_and_dull(photo: Image.Image) -> Image.Image:
    # The photo squeezed into 30 %..60 % of the range: a washed-out print.
    return Image.fromarray((_array(photo) * 0.3 + 0.3 * 255).astype(np.uint8))


# --------------------------------------------------------------------------- colour


def test_auto_levels_stretches_a_low_contrast_image_to_the_full_range(photo: Image.Image) -> None:
    dull = _flat_and_dull(photo)
    lifted = _array(auto_levels(dull, clip_percent=0.5))
    assert _array(dull).min() >= 76 and _array(dull).max() <= 154
    assert np.percentile(lifted, 0.5) <= 2 and np.percentile(lifted, 99.5) >= 253
    # One black and one white point for all channels: the colours keep their order.
    before = _array(dull)
    order_kept = np.argsort(before, axis=2, kind="stable") == np.argsort(lifted, axis=2, kind="stable")
    assert order_kept.mean() > 0.97


def test_per_channel_levels_also_remove_a_colour_cast(photo: Image.Image) -> None:
    cast = _array(photo) * np.array([0.6, 0.7, 1.0])  # a blue cast
    image = Image.fromarray(cast.astype(np.uint8))
    shared = _array(auto_levels(image)).reshape(-1, 3).mean(0)
    separate = _array(auto_levels(image, per_channel=True)).reshape(-1, 3).mean(0)
    assert np.ptp(separate) < 0.6 * np.ptp(shared)


def test_levels_leave_a_single_tone_alone() -> None:
    grey = Image.new("RGB", (32, 32), (90, 90, 90))
    assert np.array_equal(_array(auto_levels(grey)), _array(grey))


def test_saturation_zero_gives_grey_and_above_one_gives_more_colour(photo: Image.Image) -> None:
    grey = _array(adjust(photo, saturation=0.0))
    assert np.abs(grey - grey.mean(axis=2, keepdims=True)).max() <= 1
    chroma = lambda a: np.ptp(a, axis=2).mean()  # noqa: E731 - spread between the channels
    assert chroma(_array(adjust(photo, saturation=1.6))) > 1.3 * chroma(_array(photo))


def test_gamma_above_one_lifts_midtones_and_keeps_black_and_white() -> None:
    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2))
    lifted = _array(adjust(ramp, gamma=1.5))[0, :, 0]
    darker = _array(adjust(ramp, gamma=0.7))[0, :, 0]
    assert lifted[128] > 155 and darker[128] < 105
    assert lifted[0] == darker[0] == 0 and lifted[255] == darker[255] == 255
    assert np.all(np.diff(lifted) >= 0)


def test_contrast_spreads_tones_around_the_mean(photo: Image.Image) -> None:
    assert _array(adjust(photo, contrast=1.4)).std() > 1.2 * _array(photo).std()
    flat = _array(adjust(photo, contrast=0.0))
    assert flat.std() < 1


# --------------------------------------------------------------------------- smoothing


def _noisy_step(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = np.full((96, 96), 0.25)
    image[:, 48:] = 0.75
    noisy = np.clip(image + rng.normal(0, 0.04, image.shape), 0, 1)
    return Image.fromarray(np.repeat((noisy * 255).round().astype(np.uint8)[..., None], 3, axis=2))


def _edge_width(image: Image.Image) -> float:
    """10 %-90 % rise distance (pixels) of the mean row profile across the step at x = 48."""
    profile = _array(image)[:, :, 0].mean(axis=0)
    low, high = profile[30:40].mean(), profile[56:66].mean()
    levels = (profile - low) / (high - low)
    return float(np.argmax(levels > 0.9) - np.argmax(levels > 0.1))


def test_smoothing_flattens_noise_but_keeps_a_hard_edge() -> None:
    noisy = _noisy_step()
    smoothed = smooth(noisy, strength=0.1, radius=4)
    flat = (slice(8, 88), slice(8, 40))
    assert _array(smoothed)[flat].std() < 0.4 * _array(noisy)[flat].std()
    assert _edge_width(noisy) <= 1
    assert _edge_width(smoothed) <= 2
    # The measure is not blind: a plain blur of the same reach does smear the edge.
    blurred = noisy.resize((12, 12), Image.Resampling.BOX).resize((96, 96), Image.Resampling.BILINEAR)
    assert _edge_width(blurred) >= 5
    step = _array(smoothed)[:, 56:66, 0].mean() - _array(smoothed)[:, 30:40, 0].mean()
    assert step > 0.9 * 0.5 * 255


def test_zero_strength_smoothing_changes_nothing(photo: Image.Image) -> None:
    assert np.array_equal(_array(smooth(photo, strength=0.0)), _array(photo))


# --------------------------------------------------------------------------- watermark


def _changed(a: Image.Image, b: Image.Image) -> np.ndarray:
    return np.abs(_array(a) - _array(b)).max(axis=2) > 0


def test_a_corner_watermark_marks_that_corner_only(photo: Image.Image) -> None:
    marked = watermark(photo, text="Atelier", position="bottom-right", opacity=0.5, scale=0.3)
    changed = _changed(marked, photo)
    h, w = changed.shape
    assert changed[h // 2 :, w // 2 :].sum() > 200
    assert changed[: h // 2].sum() == 0 and changed[:, : w // 2].sum() == 0


def test_a_centred_watermark_sits_in_the_middle(photo: Image.Image) -> None:
    changed = _changed(watermark(photo, text="Atelier", position="center", scale=0.5), photo)
    h, w = changed.shape
    assert changed[h // 3 : 2 * h // 3, w // 4 : 3 * w // 4].sum() > 200
    assert changed[: h // 4].sum() == 0 and changed[3 * h // 4 :].sum() == 0


def test_a_tiled_watermark_covers_the_whole_picture(photo: Image.Image) -> None:
    changed = _changed(watermark(photo, text="ATELIER", tiled=True, angle=30, scale=0.2), photo)
    h, w = changed.shape
    cells = [changed[i * h // 4 : (i + 1) * h // 4, j * w // 4 : (j + 1) * w // 4] for i in range(4) for j in range(4)]
    assert all(cell.sum() > 20 for cell in cells)


def test_opacity_sets_how_strongly_the_mark_shows(photo: Image.Image) -> None:
    faint = np.abs(_array(watermark(photo, text="Atelier", opacity=0.15)) - _array(photo)).sum()
    strong = np.abs(_array(watermark(photo, text="Atelier", opacity=0.6)) - _array(photo)).sum()
    assert strong > 3 * faint > 0


def test_a_logo_watermark_is_scaled_to_the_picture(photo: Image.Image) -> None:
    logo = Image.new("RGBA", (40, 20), (255, 0, 0, 255))
    marked = watermark(photo, logo=logo, position="top-left", opacity=1.0, scale=0.5, margin=0.0)
    redness = _array(marked)[..., 0] - _array(marked)[..., 1:].mean(axis=2)
    w = photo.width
    assert (redness[: w // 4 - 1, : w // 2 - 1] > 200).all()  # 0.5 x width, aspect 2:1
    assert (redness[:, w // 2 + 2 :] < 200).all()


def test_watermark_settings_out_of_range_are_refused(photo: Image.Image) -> None:
    with pytest.raises(ValueError, match="text or a logo"):
        watermark(photo)
    with pytest.raises(ValueError, match="opacity"):
        watermark(photo, text="x", opacity=0)
    with pytest.raises(ValueError, match="position"):
        watermark(photo, text="x", position="middle")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- finish


STYLE = FinishSpec(
    auto_levels=True,
    clip_percent=1.0,
    saturation=1.2,
    gamma=1.1,
    contrast=1.05,
    smooth_strength=0.04,
    smooth_radius=3,
    watermark=Watermark(text="Atelier preview", opacity=0.4, scale=0.4),
)


def test_the_default_spec_changes_nothing(photo: Image.Image) -> None:
    assert np.array_equal(_array(finish(photo, FinishSpec())), _array(photo))


def test_finish_applies_levels_adjust_smooth_watermark_in_order(photo: Image.Image) -> None:
    dull = _flat_and_dull(photo)
    by_hand = auto_levels(dull, clip_percent=1.0)
    by_hand = adjust(by_hand, saturation=1.2, gamma=1.1, contrast=1.05)
    by_hand = smooth(by_hand, strength=0.04, radius=3)
    by_hand = watermark(by_hand, text="Atelier preview", opacity=0.4, scale=0.4)
    assert np.array_equal(_array(finish(dull, STYLE)), _array(by_hand))


def test_the_preview_has_the_mark_and_the_hd_output_does_not(photo: Image.Image) -> None:
    preview = finish(photo, STYLE)
    hd = finish(photo, STYLE, watermark=False)
    unmarked = finish(photo, FinishSpec(**{**STYLE.__dict__, "watermark": None}))
    assert np.array_equal(_array(hd), _array(unmarked))  # HD = the same picture, no mark
    changed = _changed(preview, hd)
    layer = np.asarray(watermark_layer(photo.size, text="Atelier preview", opacity=0.4, scale=0.4))[..., 3]
    assert changed.sum() > 200
    assert not changed[layer == 0].any()  # it differs only where the mark is


def test_a_spec_is_read_from_a_style_table(tmp_path: Path) -> None:
    spec = FinishSpec.from_dict(
        {
            "auto_levels": True,
            "saturation": 1.1,
            "smooth_strength": 0.05,
            "watermark": {"logo": "logo.png", "position": "center", "tiled": True, "color": [0, 0, 0]},
        },
        base_dir=tmp_path,
    )
    assert spec.auto_levels and spec.saturation == 1.1 and spec.gamma == 1.0
    assert spec.watermark is not None
    assert spec.watermark.logo == tmp_path / "logo.png" and spec.watermark.tiled
    assert spec.watermark.color == (0, 0, 0)
    with pytest.raises(ValueError, match="saturaton"):
        FinishSpec.from_dict({"saturaton": 1.2})
    with pytest.raises(ValueError, match="opacty"):
        FinishSpec.from_dict({"watermark": {"text": "x", "opacty": 0.2}})


def test_a_logo_file_from_the_spec_is_used(photo: Image.Image, tmp_path: Path) -> None:
    Image.new("RGBA", (30, 30), (0, 0, 255, 255)).save(tmp_path / "logo.png")
    spec = FinishSpec.from_dict({"watermark": {"logo": "logo.png", "opacity": 1.0}}, base_dir=tmp_path)
    marked = _array(finish(photo, spec))
    blue = marked[..., 2] - marked[..., :2].mean(axis=2)
    assert (blue > 200).sum() > 0.9 * (photo.width * 0.25) ** 2
