"""`atelier render` as people use a command line: a folder of photos in one call (the engine
loaded and the painting encoded once), `-` for stdin and stdout, --json of what was done, and a
bad photo in a folder reported without losing the others."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from atelier.cli import _register, app

_register()
runner = CliRunner()


@pytest.fixture(autouse=True)
def _models(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models_dir))
    from atelier.config import get_settings

    get_settings.cache_clear()


@pytest.fixture
def photos(tmp_path: Path, content_dir: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("dog.jpg", "chicago.jpg", "butterfly.png"):
        shutil.copy(content_dir / name, folder / name)
    (folder / "notes.txt").write_text("not a photo: left alone")
    return folder


def _pixels(path: Path | bytes) -> np.ndarray:
    with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_a_folder_is_painted_into_a_folder_as_each_photo_alone_would_be(photos: Path, tmp_path: Path, style_dir: Path) -> None:
    style = str(style_dir / "starry_night.jpg")
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(photos), "--style", style, "--size", "96", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["engine"] == "microast" and report["written"] == 3 and report["failed"] == 0
    assert [Path(p["output"]).name for p in report["pictures"]] == ["butterfly.png", "chicago.jpg", "dog.jpg"]
    for picture in report["pictures"]:
        assert picture["engine"] == "microast" and picture["seconds"] > 0
        assert max(picture["width"], picture["height"]) == 96
        with Image.open(picture["output"]) as made:
            assert made.size == (picture["width"], picture["height"])
    # The painting encoded once for the folder gives the picture a one-photo call gives.
    alone = tmp_path / "dog-alone.png"
    assert runner.invoke(app, ["render", str(photos / "dog.jpg"), "--style", style, "--size", "96", "-o", str(alone)]).exit_code == 0
    batch = tmp_path / "dog-batch"
    assert runner.invoke(app, ["render", str(photos / "dog.jpg"), str(photos / "chicago.jpg"), "--style", style, "--size", "96", "-o", str(batch), "--format", "png"]).exit_code == 0
    assert np.abs(_pixels(alone) - _pixels(batch / "dog.png")).max() <= 1


def test_a_bad_photo_in_a_folder_is_reported_and_the_others_are_painted(photos: Path, tmp_path: Path) -> None:
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", str(photos), "--style", "candy", "--size", "64", "-o", str(out), "--json"])
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert (report["written"], report["failed"]) == (3, 1)
    bad = next(p for p in report["pictures"] if p["input"].endswith("broken.jpg"))
    assert "error" in bad and not Path(bad["output"]).exists()
    assert "broken.jpg" in result.stderr and "1 of 4 photos were not painted" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["butterfly.png", "chicago.jpg", "dog.jpg"]


def test_photos_sharing_a_name_get_their_own_outputs_and_a_photo_is_never_overwritten(tmp_path: Path, content_dir: Path) -> None:
    folder = tmp_path / "same"
    folder.mkdir()
    shutil.copy(content_dir / "dog.jpg", folder / "pet.jpg")
    shutil.copy(content_dir / "butterfly.png", folder / "pet.png")
    before = (folder / "pet.jpg").read_bytes()
    result = runner.invoke(app, ["render", str(folder), "--style", "mosaic", "--size", "48", "-o", str(folder), "--format", "jpeg"])
    assert result.exit_code == 0, result.output
    assert (folder / "pet.jpg").read_bytes() == before
    assert {p.name for p in folder.iterdir()} == {"pet.jpg", "pet.png", "pet-2.jpg", "pet-3.jpg"}


def test_stdin_to_stdout(content_dir: Path) -> None:
    data = (content_dir / "dog.jpg").read_bytes()
    result = runner.invoke(app, ["render", "-", "--style", "udnie", "--size", "64", "-o", "-", "--format", "jpeg"], input=data)
    assert result.exit_code == 0, result.stderr
    with Image.open(io.BytesIO(result.stdout_bytes)) as picture:
        assert picture.format == "JPEG" and picture.size == (64, 48)


def test_json_for_one_photo_says_sizes_engine_and_seconds(content_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.webp"
    result = runner.invoke(app, ["render", str(content_dir / "chicago.jpg"), "--style", "candy", "--size", "80", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (picture,) = report["pictures"]
    assert picture["photo"] == [712, 474] and (picture["width"], picture["height"]) == (80, 53)
    assert report["engine"] == picture["engine"] == "filter"
    assert report["seconds"] >= report["paint_seconds"] >= picture["seconds"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{photos}", "-o", "{tmp}/one.png"], "folder"),
        (["{photos}", "-o", "-"], "folder"),
        (["{photos}/dog.jpg", "-o", "-", "--json"], "--json"),
        (["-", "{photos}/dog.jpg", "-o", "{tmp}/o"], "stdin"),
        (["{photos}/dog.jpg", "-o", "{tmp}/o.gif"], "o.gif"),
        (["{photos}", "--engine", "gatys", "-o", "{tmp}/o"], "one photo"),
        (["{tmp}/empty", "-o", "{tmp}/o"], "no photos"),
    ],
    ids=["folder-into-a-file", "folder-to-stdout", "json-and-stdout", "stdin-in-a-batch", "bad-suffix", "gatys-batch", "empty-folder"],
)
def test_impossible_requests_are_refused_in_one_line(args: list[str], message: str, photos: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    words = [a.format(photos=photos, tmp=tmp_path) for a in args]
    result = runner.invoke(app, ["render", *words, "--style", "candy"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
