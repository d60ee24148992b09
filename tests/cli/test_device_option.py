"""`--device cuda` / `ATELIER_DEVICE=cuda` on a machine without a GPU: one line, exit code 2, for
every command that paints (no traceback, and the server refuses at start, not per request)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from atelier.cli import _register, app

_register()
runner = CliRunner()

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: 'cuda' is accepted here")


@pytest.fixture(autouse=True)
def _models(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(models_dir))
    from atelier.config import get_settings

    get_settings.cache_clear()


@pytest.fixture
def photo(content_dir: Path) -> Path:
    return content_dir / "butterfly.png"


@pytest.fixture
def painting(style_dir: Path) -> Path:
    return next(p for p in sorted(style_dir.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


@pytest.fixture
def clip(shared_dir: Path) -> Path:
    return shared_dir / "video" / "cutBunny.mp4"


def _one_line(result) -> str:  # type: ignore[no-untyped-def]
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ["render", "{photo}", "--style", "candy", "-o", "{out}.png", "--device", "cuda"],
        ["render", "{photo}", "--engine", "microast", "--style", "{painting}", "-o", "{out}.png", "--device", "cuda"],
        ["render", "{photo}", "--engine", "gatys", "--style", "{painting}", "-o", "{out}.png", "--device", "cuda"],
        ["render", "{clip}", "--style", "candy", "-o", "{out}.mp4", "--device", "cuda"],
        ["upscale", "{photo}", "-o", "{out}.png", "--device", "cuda"],
        ["sheet", "{photo}", "-o", "{out}.png", "--device", "cuda"],
    ],
    ids=["render-filter", "render-microast", "render-gatys", "render-video", "upscale", "sheet"],
)
def test_device_cuda_is_refused_in_one_line(command: list[str], photo: Path, painting: Path, clip: Path, tmp_path: Path) -> None:
    args = [a.format(photo=photo, painting=painting, clip=clip, out=tmp_path / "out") for a in command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "no CUDA GPU" in _one_line(result)


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
def test_the_server_and_workers_refuse_atelier_device_cuda_at_start(command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_DEVICE", "cuda")
    from atelier.config import get_settings

    get_settings.cache_clear()
    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    line = _one_line(result)
    assert "ATELIER_DEVICE" in line and "no CUDA GPU" in line
