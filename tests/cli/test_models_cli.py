"""`atelier models list|download|verify|import`, in-process and as the installed command."""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

import atelier.cli.models  # noqa: F401 - registers the `models` group
from atelier.install import models
from atelier.cli import app
from atelier.config import get_settings

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def invoke(*args: str) -> object:
    return runner.invoke(app, ["models", *args], env={"COLUMNS": "200"})


def one_line_error(result: object) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    assert lines[0].startswith("error: ")
    return lines[0]


def test_list_shows_every_model_and_its_state(models_dir: Path) -> None:
    result = invoke("list", "--models-dir", str(models_dir))
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert set(models.REGISTRY) <= set(rows)
    assert "missing" in rows["adain"] and "89.8 MB" in rows["adain"]
    assert "installed" in rows["microast"] and "MIT" in rows["microast"]
    assert "installed" in rows["waifu2x-cunet"] and "waifu2x/models-cunet/" in rows["waifu2x-cunet"]


def test_list_reads_the_models_folder_from_the_settings(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(tmp_path))
    get_settings.cache_clear()
    result = invoke("list")
    assert result.exit_code == 0
    assert str(tmp_path) in result.stdout
    assert "installed" not in result.stdout
    assert "missing (import only)" in result.stdout  # pointilism


def test_verify_passes_on_the_shared_models(models_dir: Path) -> None:
    result = invoke("verify", "--models-dir", str(models_dir))
    assert result.exit_code == 0, result.output
    assert "corrupt" not in result.stdout
    assert "not installed: adain" in result.stdout


def test_verify_exits_1_and_names_a_damaged_model(models_dir: Path, tmp_path: Path) -> None:
    assert invoke("import", str(models_dir), "-n", "ust-conv2_1", "--models-dir", str(tmp_path)).exit_code == 0
    inverter = tmp_path / "vgg" / "feature_invertor_conv2_1.pth"
    data = bytearray(inverter.read_bytes())
    data[-10] ^= 1
    inverter.write_bytes(bytes(data))
    result = invoke("verify", "--models-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "corrupt" in result.stdout and "feature_invertor_conv2_1.pth" in result.stdout
    assert "atelier models download --force ust-conv2_1" in one_line_error(result)


def test_import_copies_and_reports(models_dir: Path, tmp_path: Path) -> None:
    result = invoke("import", str(models_dir), "--name", "microast", "--models-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("imported  microast/") == 4
    assert "4 files imported" in result.stdout
    assert models.status("microast", models_dir=tmp_path).state == "installed"


def test_import_from_a_folder_without_models_is_a_refusal(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    result = invoke("import", str(tmp_path / "src"), "--models-dir", str(tmp_path / "models"))
    assert result.exit_code == 2
    assert "found no model files" in one_line_error(result)


def test_an_unknown_model_is_a_refusal_that_lists_the_names(tmp_path: Path) -> None:
    result = invoke("download", "picasso", "--models-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "microast" in one_line_error(result)


def test_downloading_pointilism_says_to_import_it(tmp_path: Path) -> None:
    result = invoke("download", "filter-pointilism", "--models-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "atelier models import DIR" in one_line_error(result)


@pytest.fixture
def mirror(models_dir: Path) -> Iterator[str]:
    """The shared models folder served over HTTP on a loopback port."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(models_dir))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def serve_from(monkeypatch: pytest.MonkeyPatch, name: str, base: str) -> None:
    spec = models.REGISTRY[name]
    files = tuple(dataclasses.replace(f, urls=(f"{base}/{f.relpath}",)) for f in spec.files)
    monkeypatch.setitem(models.REGISTRY, name, dataclasses.replace(spec, files=files))


def test_download_fetches_and_reports(mirror: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    serve_from(monkeypatch, "waifu2x-upconv_7_photo", mirror)
    result = invoke("download", "waifu2x-upconv_7_photo", "--models-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("downloaded  waifu2x/models-upconv_7_photo/") == 10
    assert "10 files downloaded, 0 already installed" in result.stdout
    again = invoke("download", "waifu2x-upconv_7_photo", "--models-dir", str(tmp_path))
    assert "0 files downloaded, 10 already installed" in again.stdout
    assert invoke("verify", "waifu2x-upconv_7_photo", "--models-dir", str(tmp_path)).exit_code == 0


def test_download_offline_is_a_one_line_refusal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve_from(monkeypatch, "microast", f"http://127.0.0.1:{port}")
    result = invoke("download", "microast", "--models-dir", str(tmp_path), "--timeout", "5")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "are you offline?" in line and "atelier models import DIR" in line
    assert not (tmp_path / "microast").exists() or not any((tmp_path / "microast").iterdir())


def test_the_installed_command_lists_the_shared_models(models_dir: Path) -> None:
    command = REPO / ".venv" / "bin" / "atelier"
    if not command.exists():
        found = shutil.which("atelier")
        assert found, "the atelier console script is not installed"
        command = Path(found)
    env = {**os.environ, "ATELIER_MODELS_DIR": str(models_dir), "COLUMNS": "200"}
    done = subprocess.run(
        [str(command), "models", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"Models in {models_dir}" in done.stdout
    for name in models.REGISTRY:
        assert name in done.stdout
    microast = next(line for line in done.stdout.splitlines() if " microast " in line)
    assert "installed" in microast
