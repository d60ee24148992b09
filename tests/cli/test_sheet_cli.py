"""`atelier sheet`: every style on one photo, as a file or on stdout, with --json of what was done."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from atelier.install.styles import add_style
from atelier.cli import _register, app

_register()
runner = CliRunner()


@pytest.fixture(autouse=True)
def _setup(models_dir: Path, style_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("ATELIER_STYLES_DIR", str(tmp_path / "styles"))
    from atelier.config import get_settings

    get_settings.cache_clear()
    add_style(style_dir / "starry_night.jpg", name="starry_night", styles_dir=tmp_path / "styles", titles={"en": "The Starry Night"})


def test_sheet_writes_the_labelled_sheet_and_says_what_it_did(content_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    tiles = tmp_path / "tiles"
    result = runner.invoke(app, ["sheet", str(content_dir / "dog.jpg"), "-o", str(out), "--size", "64", "--columns", "7", "--tiles", str(tiles), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [t["name"] for t in report["tiles"]] == ["photo", "candy", "mosaic", "rain_princess", "udnie", "pointilism", "starry_night"]
    assert report["tile"] == [64, 48] and report["batch"] == 1 and report["missing"] == []
    with Image.open(out) as sheet:
        assert sheet.size == tuple(report["sheet"]) == (7 * 64 + 8 * 6, 48 + 40 + 2 * 6)
    assert sorted(p.name for p in tiles.iterdir()) == sorted(f"{t['name']}.jpg" for t in report["tiles"])


def test_sheet_reads_stdin_and_writes_stdout(content_dir: Path) -> None:
    data = (content_dir / "dog.jpg").read_bytes()
    result = runner.invoke(app, ["sheet", "-", "-o", "-", "--size", "32", "--format", "webp"], input=data)
    assert result.exit_code == 0, result.stderr
    with Image.open(io.BytesIO(result.stdout_bytes)) as sheet:
        assert sheet.format == "WEBP"


def test_sheet_refuses_json_on_stdout_beside_the_picture(content_dir: Path) -> None:
    result = runner.invoke(app, ["sheet", str(content_dir / "dog.jpg"), "-o", "-", "--json"])
    assert result.exit_code == 2 and "--json" in result.stderr


def test_sheet_refuses_an_unwritable_output_before_painting(content_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sheet", str(content_dir / "dog.jpg"), "-o", str(tmp_path / "sheet.gif")])
    assert result.exit_code == 2 and "sheet.gif" in result.stderr
