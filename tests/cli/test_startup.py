"""What a one-off command pays before it works: only its own imports.

`atelier render` must not import the web app or the database layer; a command the table of
command modules does not know still works (every module is loaded for it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from atelier.cli import COMMAND_MODULES, _command_of, _register, app

HEAVY = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "jinja2", "prometheus_client")


def _modules_after(args: list[str], tmp_path: Path, models_dir: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    # The real entry point in a fresh interpreter; at exit it lists the heavy modules it imported.
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: print('LOADED', ' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr))\n"
        f"sys.argv = ['atelier', *{args!r}]\n"
        "from atelier.cli import main\n"
        "main()\n"
    )
    env = {**os.environ, "ATELIER_DATA_DIR": str(tmp_path / "data"), "ATELIER_MODELS_DIR": str(models_dir)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    line = next(line for line in done.stderr.splitlines() if line.startswith("LOADED"))
    return done, set(line.split()[1:])


def test_render_imports_neither_the_web_app_nor_the_database(tmp_path: Path, models_dir: Path, content_dir: Path) -> None:
    out = tmp_path / "candy.png"
    done, loaded = _modules_after(["render", str(content_dir / "butterfly.png"), "--style", "candy", "--size", "64", "-o", str(out)], tmp_path, models_dir)
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    assert loaded == set(), f"atelier render imported {sorted(loaded)}"


def test_the_server_still_gets_its_stack(tmp_path: Path, models_dir: Path) -> None:
    done, loaded = _modules_after(["serve", "--help"], tmp_path, models_dir)
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout


def test_the_command_word_is_found_past_the_root_options() -> None:
    assert _command_of(["-v", "render", "x.jpg"]) == "render"
    assert _command_of(["--version"]) is None
    assert _command_of([]) is None


def test_every_command_module_registers_and_an_unknown_word_loads_them_all() -> None:
    _register("no-such-command")
    assert all(f"atelier.cli.{name}" in sys.modules for name in COMMAND_MODULES)
    import typer.main

    names = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert {"render", "sheet", "serve", "worker", "models", "styles", "db", "reconcile", "bench", "upscale"} <= names


def test_a_painting_s_faces_are_found_outside_the_painting_process(tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path) -> None:
    # The face detector runs in a helper process beside the torch import (atelier.cli.faces_ahead):
    # OpenCV never loads into the process that paints, and the command still ends with status 0
    # and its atexit handlers run (it leaves without tearing the interpreter down).
    out = tmp_path / "portrait.png"
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('LOADED', 'cv2' in sys.modules, 'torch' in sys.modules, file=sys.stderr))\n"
        f"sys.argv = ['atelier', 'render', {str(content_dir / 'brad_pitt.jpg')!r}, '--style', "
        f"{str(style_dir / 'starry_night.jpg')!r}, '--size', '256', '-o', {str(out)!r}]\n"
        "from atelier.cli import main\n"
        "main()\n"
    )
    env = {**os.environ, "ATELIER_DATA_DIR": str(tmp_path / "data"), "ATELIER_MODELS_DIR": str(models_dir)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    assert "LOADED False True" in done.stderr
