"""`atelier upscale`: a picture in, twice the size out; one-line refusals with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from atelier.art.engines import upscale as engine
from atelier.install.models import waifu2x_files
from atelier.cli import _register, app
from atelier.cli import upscale as command

_register()
runner = CliRunner()
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(autouse=True)
def _models(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models_dir))
    from atelier.config import get_settings

    get_settings.cache_clear()


@pytest.fixture(scope="module")
def small(content_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("in") / "butterfly-small.png"
    with Image.open(content_dir / "butterfly.png") as image:
        image.convert("RGB").resize((45, 38), Image.Resampling.BICUBIC).save(path)
    return path


def _error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_the_default_is_upconv_7_photo_at_noise_level_2(small: Path, tmp_path: Path, models_dir: Path) -> None:
    out = tmp_path / "out.png"
    result = runner.invoke(app, ["upscale", str(small), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    with Image.open(out) as written, Image.open(small) as source:
        assert written.size == (90, 76)
        files = waifu2x_files("upconv_7_photo", noise=2, models_dir=models_dir)
        expected = engine.Upscaler.load(files).upscale_image(source)
        assert np.array_equal(np.asarray(written), np.asarray(expected))


def test_the_command_and_the_engine_offer_the_same_models_and_default() -> None:
    assert command.MODELS == engine.MODELS
    assert command.DEFAULT_NOISE == engine.DEFAULT_NOISE == 2


def test_transparency_is_kept_and_upscaled_with_the_picture(small: Path, tmp_path: Path) -> None:
    rgba = Image.open(small).convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    alpha.paste(0, (0, 0, 20, 38))  # the left part transparent
    rgba.putalpha(alpha)
    source, out = tmp_path / "cutout.png", tmp_path / "cutout-2x.png"
    rgba.save(source)
    result = runner.invoke(app, ["upscale", str(source), "-o", str(out), "--noise", "-1"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as written:
        assert written.mode == "RGBA" and written.size == (90, 76)
        assert written.getpixel((5, 40))[3] == 0 and written.getpixel((80, 40))[3] == 255


def test_cunet_at_scale_1_only_denoises(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "clean.png"
    result = runner.invoke(app, ["upscale", str(small), "-o", str(out), "--model", "cunet", "--scale", "1", "--noise", "1"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as written:
        assert written.size == (45, 38)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "esrgan"], "unknown model 'esrgan'"),
        (["--scale", "1", "--noise", "2"], "only cunet"),
        (["--model", "cunet", "--scale", "1", "--noise", "-1"], "only denoises"),
    ],
)
def test_impossible_choices_are_refused_in_one_line(small: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["upscale", str(small), "-o", str(tmp_path / "x.png"), *args])
    assert result.exit_code == 2
    assert message in _error_line(result)
    assert not (tmp_path / "x.png").exists()


def test_an_unwritable_format_is_refused(small: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["upscale", str(small), "-o", str(tmp_path / "x.gif")])
    assert result.exit_code == 2
    assert "use a .png, .jpg or .webp" in _error_line(result)


def test_a_file_that_is_not_an_image_is_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 certainly not a whole jpeg")
    result = runner.invoke(app, ["upscale", str(bad), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert _error_line(result).startswith("error:")


def test_a_missing_input_is_refused_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["upscale", str(tmp_path / "nope.png"), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "nope.png" in _error_line(result)


def test_missing_weights_name_the_command_that_installs_them(small: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["upscale", str(small), "-o", str(tmp_path / "x.png"), "--models-dir", str(tmp_path / "empty")]
    )
    assert result.exit_code == 2
    assert "atelier models download waifu2x-upconv_7_photo" in _error_line(result)


def test_the_installed_command_upscales_in_a_real_process(small: Path, tmp_path: Path, models_dir: Path) -> None:
    out = tmp_path / "art.jpg"
    env = {**os.environ, "ATELIER_MODELS_DIR": str(models_dir), "ATELIER_DATA_DIR": str(tmp_path / "data")}
    env["PYTHONPATH"] = str(SRC)
    done = subprocess.run(
        [sys.executable, "-c", "from atelier.cli import main; main()", "upscale", str(small), "-o", str(out),
         "--model", "upconv_7_art", "--noise", "0", "--tile", "16"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"wrote {out}" in done.stderr
    with Image.open(out) as written:
        assert written.format == "JPEG" and written.size == (90, 76)
