"""`atelier render`: a photo in, an artwork out, with each instant engine and real weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from atelier.art.blocks.images import to_tensor
from atelier.art.blocks.vgg import load_vgg
from atelier.cli import _register, app

_register()
runner = CliRunner()


@pytest.fixture(autouse=True)
def _models(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models_dir))
    from atelier.config import get_settings

    get_settings.cache_clear()


@pytest.fixture(scope="module")
def vgg(models_dir: Path):
    return load_vgg(models_dir / "vgg" / "vgg_normalised_conv2_1.pth", up_to="relu2_1")


def colour_stats(image: Image.Image) -> torch.Tensor:
    """Per-channel mean and standard deviation: the colour palette in six numbers."""
    t = to_tensor(image)[0].flatten(1)
    return torch.cat([t.mean(1), t.std(1)])


def gram_stats(vgg, image: Image.Image) -> list[torch.Tensor]:
    """Gram matrices of relu1_1 and relu2_1 features: texture as Gatys et al. define it."""
    with torch.inference_mode():
        feats = vgg(to_tensor(image.resize((256, 256))), layers=("relu1_1", "relu2_1"))
    grams = []
    for f in feats.values():
        flat = f[0].flatten(1)
        grams.append(flat @ flat.T / flat.shape[1])
    return grams


def texture_distance(vgg, a: Image.Image, b: Image.Image) -> float:
    return sum(
        float((ga - gb).norm() / gb.norm()) for ga, gb in zip(gram_stats(vgg, a), gram_stats(vgg, b))
    )


def assert_moved_toward_style(vgg, content: Image.Image, out: Image.Image, style: Image.Image) -> None:
    colour_before = float((colour_stats(content) - colour_stats(style)).norm())
    colour_after = float((colour_stats(out) - colour_stats(style)).norm())
    texture_before = texture_distance(vgg, content, style)
    texture_after = texture_distance(vgg, out, style)
    assert colour_after < 0.75 * colour_before, (colour_before, colour_after)
    assert texture_after < 0.75 * texture_before, (texture_before, texture_after)


@pytest.mark.parametrize(
    ("engine", "extra"),
    [("microast", []), ("adain", ["--weights", "ust-conv3_1"])],
)
def test_each_style_engine_paints_at_the_requested_size_toward_the_style(
    engine: str, extra: list[str], content_dir: Path, style_dir: Path, tmp_path: Path, vgg
) -> None:
    out = tmp_path / f"dog-{engine}.png"
    style = style_dir / "starry_night.jpg"
    result = runner.invoke(
        app,
        ["render", str(content_dir / "dog.jpg"), "--style", str(style), "--engine", engine,
         "--size", "256", "-o", str(out), *extra],
    )
    assert result.exit_code == 0, result.output
    painted = Image.open(out)
    assert painted.size == (256, 192)  # dog.jpg is 768x576: the aspect ratio is kept
    content = Image.open(content_dir / "dog.jpg").convert("RGB").resize((256, 192))
    assert_moved_toward_style(vgg, content, painted.convert("RGB"), Image.open(style).convert("RGB"))


def test_a_filter_paints_toward_its_own_painting(content_dir: Path, style_dir: Path, tmp_path: Path, vgg) -> None:
    out = tmp_path / "golden-candy.jpg"
    result = runner.invoke(
        app, ["render", str(content_dir / "golden_gate.jpg"), "--style", "candy", "--size", "320", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    painted = Image.open(out).convert("RGB")
    assert painted.size == (320, 320)
    content = Image.open(content_dir / "golden_gate.jpg").convert("RGB").resize((320, 320))
    assert_moved_toward_style(vgg, content, painted, Image.open(style_dir / "candy.jpg").convert("RGB"))


def test_alpha_zero_keeps_the_photo_for_a_filter(content_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "kept.png"
    result = runner.invoke(
        app, ["render", str(content_dir / "brad_pitt.jpg"), "-s", "mosaic", "--alpha", "0", "--size", "128", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    original = Image.open(content_dir / "brad_pitt.jpg").convert("RGB")
    from atelier.art.blocks.images import fit_longest

    expected = to_tensor(fit_longest(original, 128))
    assert torch.allclose(to_tensor(Image.open(out)), expected, atol=1.5 / 255)


def test_two_styles_with_a_mask_paint_two_regions_differently(
    content_dir: Path, style_dir: Path, tmp_path: Path
) -> None:
    mask = tmp_path / "mask.png"
    left_white = Image.new("L", (256, 256), 0)
    left_white.paste(255, (0, 0, 128, 256))
    left_white.save(mask)
    out = tmp_path / "regions.png"
    result = runner.invoke(
        app,
        ["render", str(content_dir / "golden_gate.jpg"), "-s", str(style_dir / "candy.jpg"), "-s",
         str(style_dir / "sketch.png"), "--mask", str(mask), "--size", "256", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    t = to_tensor(Image.open(out))[0]
    left_saturation = (t[:, :, :100].max(0).values - t[:, :, :100].min(0).values).mean()
    right_saturation = (t[:, :, 156:].max(0).values - t[:, :, 156:].min(0).values).mean()
    # candy is vivid, the pencil sketch grey: the two halves must show it.
    assert left_saturation > 2 * right_saturation


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--style", "candy", "-o", "{tmp}/o.jpg", "{missing}"], "no such file"),
        (["--style", "candy", "-o", "{tmp}/o.gif", "{dog}"], "use a .png, .jpg or .webp"),
        (["--style", "nosuchfilter", "--engine", "filter", "-o", "{tmp}/o.jpg", "{dog}"], "unknown filter"),
        (["--style", "{text}", "-o", "{tmp}/o.jpg", "{dog}"], "not an image"),
        (["--style", "candy", "-o", "{tmp}/o.jpg", "{text}"], "not an image"),
        (["--style", "{dog}", "--engine", "adain", "-o", "{tmp}/o.jpg", "{dog}"], "atelier models download adain"),
        (["--style", "{dog}", "--style-weights", "1,2", "-o", "{tmp}/o.jpg", "{dog}"], "one weight per style"),
        (["--style", "{dog}", "--engine", "nope", "-o", "{tmp}/o.jpg", "{dog}"], "unknown engine"),
    ],
)
def test_bad_input_gets_exit_code_2_and_one_line(
    args: list[str], message: str, content_dir: Path, tmp_path: Path
) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    values = {"tmp": str(tmp_path), "missing": str(tmp_path / "nope.jpg"), "dog": str(content_dir / "dog.jpg"), "text": str(text)}
    result = runner.invoke(app, ["render", *[a.format(**values) for a in args]])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_the_installed_command_renders_in_a_real_process(content_dir: Path, tmp_path: Path, models_dir: Path) -> None:
    out = tmp_path / "dog.webp"
    env = {**os.environ, "ATELIER_MODELS_DIR": str(models_dir), "ATELIER_DATA_DIR": str(tmp_path / "data")}
    atelier = Path(sys.executable).with_name("atelier")
    proc = subprocess.run(
        [str(atelier), "render", str(content_dir / "dog.jpg"), "-s", "udnie", "--size", "200", "-o", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out).size == (200, 150)
    assert f"wrote {out}" in proc.stderr
