"""`atelier styles list|show|add|import|download`, with paintings from ../shared."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atelier.cli import _register, app
from atelier.config import get_settings

_register()
runner = CliRunner()


@pytest.fixture(autouse=True)
def _folders(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("ATELIER_STYLES_DIR", str(tmp_path / "styles"))
    get_settings.cache_clear()
    return tmp_path / "styles"


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["styles", *args], env={"COLUMNS": "200"})


def one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_list_shows_the_shipped_styles_before_any_download() -> None:
    result = invoke("list")
    assert result.exit_code == 0, result.output
    assert "starry_night" in result.stdout and "shipped (not downloaded)" in result.stdout
    assert "atelier styles download" in result.stderr


def test_add_then_list_and_show(style_dir: Path, _folders: Path) -> None:
    result = invoke(
        "add", str(style_dir / "la_muse.jpg"), "--name", "muse", "--title", "The Muse", "--title-es", "La musa",
        "--artist", "Pablo Picasso",
    )
    assert result.exit_code == 0, result.output
    assert (_folders / "muse" / "style.toml").is_file()
    listed = invoke("list")
    row = next(line for line in listed.stdout.splitlines() if " muse " in line)
    assert "The Muse" in row and "installed" in row
    shown = invoke("show", "muse")
    assert shown.exit_code == 0, shown.output
    assert "title.es:  La musa" in shown.stdout
    assert "with ust-conv3_1: muse (shallow)" in shown.stdout  # resolved on the installed weights
    assert "pass 1: 256 px" in shown.stdout and "watermark: text 'Atelier'" in shown.stdout


def test_show_a_shipped_style_says_how_to_download_its_painting() -> None:
    result = invoke("show", "the_scream")
    assert result.exit_code == 0, result.output
    assert "Edvard Munch (1893)" in result.stdout
    assert "missing: run `atelier styles download the_scream`" in result.stdout
    assert "upload.wikimedia.org" in result.stdout


def test_refusals_are_one_line(style_dir: Path, tmp_path: Path) -> None:
    assert "no style named 'picasso'" in one_line_error(invoke("show", "picasso"))
    assert invoke("add", str(style_dir / "udnie.jpg"), "--name", "u").exit_code == 0
    again = invoke("add", str(style_dir / "udnie.jpg"), "--name", "u")
    assert again.exit_code == 2 and "--force" in one_line_error(again)
    missing = invoke("add", str(tmp_path / "nothing.jpg"), "--name", "x")
    assert missing.exit_code == 2 and "no such file" in one_line_error(missing)
    empty = invoke("import", str(tmp_path))
    assert empty.exit_code == 2 and "found no style" in one_line_error(empty)


def test_import_a_folder_of_styles(style_dir: Path, tmp_path: Path, _folders: Path) -> None:
    other = tmp_path / "other"
    assert invoke("add", str(style_dir / "candy.jpg"), "--name", "candy", "--styles-dir", str(other)).exit_code == 0
    assert invoke("add", str(style_dir / "mosaic.jpg"), "--name", "mosaic", "--styles-dir", str(other)).exit_code == 0
    result = invoke("import", str(other))
    assert result.exit_code == 0, result.output
    assert "2 imported, 0 skipped, 0 failed" in result.stdout
    assert (_folders / "mosaic" / "painting.jpg").is_file()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


@pytest.fixture
def shipped(style_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A shipped catalog whose paintings come from a loopback server over ../shared."""
    handler = functools.partial(_Quiet, directory=str(style_dir))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    catalog = tmp_path / "shipped"
    for name, file in (("starry", "starry_night.jpg"), ("lost", "no-such-file.jpg")):
        (catalog / name).mkdir(parents=True)
        (catalog / name / "style.toml").write_text(f"[title]\nen = '{name}'\n[painting]\nurls = ['{base}/{file}']\n")
    import atelier.install.styles as styles

    monkeypatch.setattr(styles, "shipped_catalog_dir", lambda: catalog)
    yield catalog
    httpd.shutdown()
    httpd.server_close()


def test_download_reports_each_style_and_fails_when_one_fails(shipped: Path, _folders: Path) -> None:
    result = invoke("download")
    assert result.exit_code == 1
    assert "downloaded starry" in " ".join(result.stdout.split())
    assert "failed     lost  " in result.stdout and "HTTP 404" in result.stdout
    assert "1 downloaded, 0 already there, 1 failed" in result.stdout
    assert "lost" in one_line_error(result)
    assert (_folders / "starry" / "painting.jpg").is_file()
    again = invoke("download", "starry")
    assert again.exit_code == 0 and "0 downloaded, 1 already there, 0 failed" in again.stdout
    unknown = invoke("download", "nope")
    assert unknown.exit_code == 2 and "has no style 'nope'" in one_line_error(unknown)
