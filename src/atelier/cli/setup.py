"""``atelier setup``: fetch what the default product needs (weights, catalog paintings) on first
start. ``scripts/run`` calls it before ``atelier serve``; it is also usable alone."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from atelier.cli.app import app, fail
from atelier.cli.progressbar import download_bar
from atelier.config import get_settings


@app.command("setup")
def setup_command(
    styles: bool = typer.Option(True, "--styles/--no-styles", help="Also fetch the catalog's paintings."),
    timeout: float = typer.Option(30.0, "--timeout", min=1.0, help="Seconds to wait for a server."),
    check: bool = typer.Option(False, "--check", help="Only say what is missing; fetch nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print what was found and fetched as JSON."),
    models_dir: Path | None = typer.Option(None, "--models-dir", help="Model weights folder (default: ATELIER_MODELS_DIR)."),
    styles_dir: Path | None = typer.Option(None, "--styles-dir", help="Style catalog folder (default: ATELIER_STYLES_DIR)."),
) -> None:
    """Fetch the weights the default engines use and the catalog's paintings, where missing.

    Each file is fetched from its official source with a progress bar, checked (sha256 where
    pinned) and only then put in place, so running it again goes on where it stopped. Without
    internet it says in one line what is missing and what works; exit status 1 while something
    is missing (scripts/run then serves what is there).
    """
    from atelier.install.setup import setup

    settings = get_settings()
    models_dir = models_dir or settings.models_path
    styles_dir = styles_dir or settings.styles_path
    with download_bar() as progress:
        report = setup(models_dir=models_dir, styles_dir=styles_dir, with_styles=styles, fetch=not check, timeout=timeout, progress=progress)
    if as_json:
        typer.echo(json.dumps({
            "complete": report.complete, "offline": report.offline or None,
            "models": {"present": report.present_models, "fetched": report.fetched_models, "missing": report.missing_models},
            "styles": {"present": report.present_styles, "fetched": report.fetched_styles, "missing": report.missing_styles},
            "models_dir": str(models_dir), "styles_dir": str(styles_dir),
        }, indent=2))
    if not report.complete:
        raise fail(report.summary(), code=1)
    if not as_json:
        typer.echo(f"atelier setup: {report.summary()} ({models_dir}, {styles_dir})", err=True)
