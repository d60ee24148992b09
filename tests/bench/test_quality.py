"""`atelier bench quality`: one row per photo and catalog style, the commission's distances
beside MicroAST's (the table's shape, not its numbers: a tiny recipe at a tiny size)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atelier.bench.quality import PHOTOS, photo_paths
from atelier.cli import _register, app

_register()
runner = CliRunner()

ROW_KEYS = {
    "photo", "style", "size", "commission_style", "commission_content", "microast_style", "microast_content",
    "commission_seconds", "microast_seconds", "recipe", "commission_better",
}


@pytest.fixture(autouse=True)
def _catalog(models_dir: Path, style_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real weights and a catalog of one style (The Starry Night) with a tiny recipe."""
    from atelier.config import get_settings
    from atelier.install.styles import StyleRecipe, add_style

    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("ATELIER_STYLES_DIR", str(tmp_path / "styles"))
    monkeypatch.setenv("ATELIER_DEVICE", "cpu")
    get_settings.cache_clear()
    add_style(style_dir / "starry_night.jpg", name="starry_night", styles_dir=tmp_path / "styles", recipe=StyleRecipe(base="auto", passes="48x3,64x3"))


def test_one_photo_in_one_style_gives_one_json_row_of_both_pictures_distances(content_dir: Path, tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    result = runner.invoke(
        app, ["bench", "quality", "--size", "64", "--photos", "pet", "--styles", "starry_night", "--images", str(content_dir), "--keep", str(kept), "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == ROW_KEYS
    assert (row["photo"], row["style"], row["size"]) == ("pet", "starry_night", 64)
    for key in ("commission_style", "commission_content", "microast_style", "microast_content", "commission_seconds", "microast_seconds"):
        assert row[key] >= 0
    assert row["commission_better"] == (
        row["commission_style"] <= row["microast_style"] and row["commission_content"] <= row["microast_content"]
    )
    assert sorted(p.name for p in kept.iterdir()) == ["pet-starry_night-commission.png", "pet-starry_night-microast.png"]


def test_the_table_has_a_column_for_each_distance_and_the_verdict(content_dir: Path) -> None:
    result = runner.invoke(app, ["bench", "quality", "--size", "64", "--photos", "pet", "--images", str(content_dir), "--markdown"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert lines[0] == (
        "| photo | style | commission style | commission content | MicroAST style | MicroAST content "
        "| commission s | MicroAST s | commission better |"
    )
    assert len(lines) == 3  # the header, its rule, one row
    assert lines[2].startswith("| pet | starry_night |")


def test_an_unknown_style_or_photo_is_refused_in_one_line(content_dir: Path) -> None:
    result = runner.invoke(app, ["bench", "quality", "--styles", "nope", "--images", str(content_dir)])
    assert result.exit_code == 2
    assert "no commission style 'nope'" in result.output and "starry_night" in result.output
    result = runner.invoke(app, ["bench", "quality", "--photos", "cat", "--images", str(content_dir)])
    assert result.exit_code == 2
    assert "unknown photo 'cat'" in result.output


def test_the_fixed_photos_are_a_pet_a_portrait_a_landscape_and_small_faces(content_dir: Path) -> None:
    assert set(PHOTOS) == {"pet", "portrait", "landscape", "faces"}
    assert all(path.is_file() for path in photo_paths(None, images_dir=content_dir).values())
