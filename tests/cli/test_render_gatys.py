"""`atelier render --engine gatys` and the finishing options of every engine, at tiny sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from atelier.install.styles import add_style
from atelier.cli import _register, app
from atelier.config import get_settings

_register()
runner = CliRunner()


@pytest.fixture(autouse=True)
def _settings(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("ATELIER_STYLES_DIR", str(tmp_path / "styles"))
    get_settings.cache_clear()


def render(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["render", *args])


def one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_gatys_paints_in_passes_and_saves_intermediates(content_dir: Path, style_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jpg"
    result = render(
        str(content_dir / "chicago.jpg"), "--engine", "gatys", "--style", str(style_dir / "starry_night.jpg"),
        "--passes", "48x4,64x4", "--save-every", "2", "-o", str(out),
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.size == (64, 43)
    saved = sorted(p.name for p in tmp_path.glob("out.pass*"))
    assert saved == ["out.pass1-0002.jpg", "out.pass1-0004.jpg", "out.pass2-0002.jpg", "out.pass2-0004.jpg"]
    with Image.open(tmp_path / "out.pass1-0002.jpg") as first:
        assert first.size == (48, 32)
    assert "shallow: 48x4, 64x4" in result.stderr and "s/iteration" in result.stderr


def test_a_catalog_style_name_paints_with_its_recipe_finish_and_mark(
    content_dir: Path, style_dir: Path, tmp_path: Path
) -> None:
    style = add_style(style_dir / "udnie.jpg", name="udnie_oil", styles_dir=tmp_path / "styles")
    toml = style.folder / "style.toml"
    toml.write_text(toml.read_text().replace('base = "auto"', 'base = "auto"\npasses = "48x3"'))
    plain, marked = tmp_path / "plain.png", tmp_path / "marked.png"
    args = [str(content_dir / "golden_gate.jpg"), "--style", "udnie_oil", "--finish", "--upscale", "2"]
    assert render(*args, "-o", str(plain)).exit_code == 0
    result = render(*args, "--watermark", "Shop", "-o", str(marked))
    assert result.exit_code == 0, result.output
    assert "udnie_oil (shallow): 48x3" in result.stderr
    with Image.open(plain) as a, Image.open(marked) as b:
        assert a.size == b.size == (96, 96)
        clean, mark = np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16)
    # The same seeded painting; the mark only where it sits (bottom-right).
    assert np.array_equal(clean[:50, :50], mark[:50, :50])
    assert np.abs(clean[80:, 60:] - mark[80:, 60:]).mean() > 3


def test_upscale_and_watermark_work_with_an_instant_engine(content_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "candy.png"
    result = render(
        str(content_dir / "harriet_128x128.jpg"), "--style", "candy", "--size", "64", "--upscale", "2",
        "--watermark", "Atelier", "-o", str(out),
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.size == (128, 128)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--passes", "350x"], "bad pass '350x'"),
        (["--passes", "350x400;960x200"], "SIZExITERATIONS"),
        (["--recipe", "baroque"], "unknown recipe 'baroque'"),
        (["--recipe", "classic"], "atelier models download adain"),
        (["--upscale", "3"], "--upscale takes 2 or 4"),
    ],
)
def test_bad_gatys_options_are_one_line_refusals(
    content_dir: Path, style_dir: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    result = render(
        str(content_dir / "golden_gate.jpg"), "--engine", "gatys", "--style", str(style_dir / "udnie.jpg"),
        *extra, "-o", str(tmp_path / "x.jpg"),
    )
    assert result.exit_code == 2
    assert message in one_line_error(result)
    assert not (tmp_path / "x.jpg").exists()


def test_gatys_options_with_an_instant_engine_are_refused(content_dir: Path, style_dir: Path, tmp_path: Path) -> None:
    result = render(
        str(content_dir / "golden_gate.jpg"), "--engine", "adain", "--style", str(style_dir / "udnie.jpg"),
        "--passes", "64x2", "-o", str(tmp_path / "x.jpg"),
    )
    assert result.exit_code == 2
    assert "for --engine gatys" in one_line_error(result)
