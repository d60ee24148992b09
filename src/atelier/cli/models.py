"""``atelier models list|download|verify|import|publish|sync``: the weights in the models folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from atelier.cli.progressbar import download_bar
from atelier.install import models
from atelier.cli.app import app, fail, refusals
from atelier.config import get_settings

models_app = typer.Typer(
    help="List, download, verify and import model weights.",
    no_args_is_help=True,
)
app.add_typer(
    models_app,
    name="models",
    help="The model weights: list what is installed, download from the official sources, "
    "verify checksums, import a folder.",
)

_MODELS_DIR_HELP = "Model weights folder (default: ATELIER_MODELS_DIR, or <data dir>/models)."


def _folder(models_dir: Path | None) -> Path:
    return models_dir if models_dir is not None else get_settings().models_path


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


@models_app.command("list")
def list_models(
    models_dir: Path | None = typer.Option(None, "--models-dir", help=_MODELS_DIR_HELP),
) -> None:
    """Every model Atelier knows, and whether it is installed."""
    folder = _folder(models_dir)
    table = Table(title=f"Models in {folder}", title_justify="left")
    width = max(len(name) for name in models.REGISTRY)
    table.add_column("name", no_wrap=True, min_width=width)
    table.add_column("status", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("license")
    table.add_column("folder", overflow="fold")
    for name, spec in models.REGISTRY.items():
        state = models.status(name, models_dir=folder).state
        shown = {"installed": "[green]installed[/]", "partial": "[yellow]partial[/]"}.get(state, "missing")
        if not spec.downloadable and state != "installed":
            shown += " (import only)"
        folders = sorted({f.relpath.rsplit("/", 1)[0] + "/" for f in spec.files})
        table.add_row(name, shown, _human(spec.size), spec.license.split(" (")[0], ", ".join(folders))
    Console().print(table)


@models_app.command("download")
def download_models(
    names: list[str] | None = typer.Argument(
        None, help="Models to download (default: every downloadable model). See `atelier models list`."
    ),
    force: bool = typer.Option(False, "--force", help="Download again even when installed and good."),
    timeout: float = typer.Option(60.0, "--timeout", min=1.0, help="Network timeout in seconds."),
    models_dir: Path | None = typer.Option(None, "--models-dir", help=_MODELS_DIR_HELP),
) -> None:
    """Download weights from their official sources, checking sha256 where it is pinned."""
    folder = _folder(models_dir)
    with refusals(), download_bar() as progress:
        reports = models.download(names or None, models_dir=folder, progress=progress, timeout=timeout, force=force)
    fetched = [r for r in reports if r.state == "downloaded"]
    for report in fetched:
        typer.echo(f"downloaded  {report.relpath}")
    kept = len(reports) - len(fetched)
    typer.echo(f"{len(fetched)} files downloaded, {kept} already installed, in {folder}")


@models_app.command("verify")
def verify_models(
    names: list[str] | None = typer.Argument(None, help="Models to check (default: all)."),
    models_dir: Path | None = typer.Option(None, "--models-dir", help=_MODELS_DIR_HELP),
) -> None:
    """Check the sha256 of installed weights. Exit status 1 when a file is damaged."""
    folder = _folder(models_dir)
    with refusals():
        reports = models.verify(names or None, models_dir=folder)
    # One row per installed model; the worst file decides. Missing models are listed after.
    labels = {"ok": "[green]ok[/]", "known": "[green]ok (known conversion)[/]",
              "unpinned": "[yellow]unpinned[/]", "corrupt": "[bold red]corrupt[/]",
              "partial": "[yellow]partial[/]"}  # fmt: skip
    order = ["ok", "known", "unpinned", "partial", "corrupt"]
    by_model: dict[str, list[models.FileReport]] = {}
    for report in reports:
        by_model.setdefault(report.name, []).append(report)
    table = Table(title=f"Checksums in {folder}", title_justify="left")
    table.add_column("model", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("files", justify="right", no_wrap=True)
    table.add_column("note", overflow="fold")
    absent, corrupt = [], []
    for name, files in by_model.items():
        present = [r for r in files if r.state != "missing"]
        if not present:
            absent.append(name)
            continue
        states = {r.state for r in present} | ({"partial"} if len(present) < len(files) else set())
        worst = max(states, key=order.index)
        if worst == "corrupt":
            corrupt.append(name)
            note = "; ".join(f"{r.relpath}: {r.message}" for r in present if r.state == "corrupt")
        elif worst == "partial":
            note = f"{len(files) - len(present)} of {len(files)} files missing"
        else:
            note = next((r.message for r in present if r.message and r.state != "known"), "")
        table.add_row(name, labels[worst], f"{len(present)}/{len(files)}", note)
    console = Console()
    if table.row_count:
        console.print(table)
    else:
        console.print("no model files installed", highlight=False)
    if absent:
        console.print(f"not installed: {', '.join(absent)}", highlight=False)
    if corrupt:
        damaged = sum(r.state == "corrupt" for r in reports)
        raise fail(
            f"{damaged} damaged file(s); replace them with "
            f"`atelier models download --force {' '.join(corrupt)}`",
            code=1,
        )


@models_app.command("import")
def import_models(
    source: Path = typer.Argument(..., help="A folder laid out like the models folder (<family>/<file>)."),
    names: list[str] | None = typer.Option(None, "--name", "-n", help="Only these models (repeatable)."),
    models_dir: Path | None = typer.Option(None, "--models-dir", help=_MODELS_DIR_HELP),
) -> None:
    """Copy weights from a folder (another machine's models folder, a USB stick...), checking them."""
    folder = _folder(models_dir)
    with refusals():
        reports = models.import_dir(source, models_dir=folder, names=names or None)
    for report in reports:
        if report.state == "imported":
            note = f"  ({report.message})" if report.message else ""
            typer.echo(f"imported  {report.relpath}{note}")
    refused = [r for r in reports if r.state == "refused"]
    for report in refused:
        typer.echo(f"refused   {report.relpath}: {report.message}", err=True)
    imported = sum(r.state == "imported" for r in reports)
    present = sum(r.state == "present" for r in reports)
    typer.echo(f"{imported} files imported, {present} already installed, into {folder}")
    if refused:
        raise fail(f"{len(refused)} file(s) failed their checksum and were not copied", code=1)


@models_app.command("publish")
def publish_models_command() -> None:
    """Put ATELIER_MODELS_DIR's weights in the blob store (ATELIER_STORAGE_URL), one bundle per
    family folder: with ATELIER_SYNC_MODELS on, every `atelier serve` and `atelier worker`
    fetches them at start (checked by sha256), so a new machine needs no weights by hand."""
    from atelier.cli.store import blob_store_from_settings, store_refusals
    from atelier.service.catalog_sync import publish_models

    settings = get_settings()
    if not settings.models_path.is_dir():
        raise fail(f"no models folder at {settings.models_path}")
    with store_refusals():
        blobs = blob_store_from_settings(settings)
        try:
            families = publish_models(blobs, settings)
        finally:
            blobs.close()
    typer.echo(f"published to the blob store ({settings.storage_url}): {', '.join(families) or 'nothing'}")


@models_app.command("sync")
def sync_models_command() -> None:
    """Fetch the published weights into ATELIER_MODELS_DIR now (only files whose sha256 differ)."""
    from atelier.cli.store import blob_store_from_settings, store_refusals
    from atelier.service.catalog_sync import models_mirror

    settings = get_settings()
    with store_refusals():
        blobs = blob_store_from_settings(settings)
        try:
            report = models_mirror(blobs, settings).sync()
        finally:
            blobs.close()
    typer.echo(
        f"{settings.models_path}: {len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged ({report.bytes_downloaded} bytes fetched)"
    )
    if report.failed:
        raise fail("could not sync: " + "; ".join(f"{n}: {why}" for n, why in report.failed.items()), code=1)
