"""``atelier styles list|show|add|import|download``: the hand-picked style catalog."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from atelier.cli.app import app, fail, refusals
from atelier.config import get_settings

if TYPE_CHECKING:
    from atelier.install.styles import Style

# atelier.install.styles (and torch behind it) is imported inside the commands: `atelier --help`
# stays quick.

styles_app = typer.Typer(help="The style catalog: list, show, add, import, download.", no_args_is_help=True)
app.add_typer(
    styles_app,
    name="styles",
    help="The hand-picked style catalog: list and show styles, add one from a painting, import "
    "a folder, download the public-domain paintings of the shipped catalog.",
)

_STYLES_DIR_HELP = "Style catalog folder (default: ATELIER_STYLES_DIR, or <data dir>/styles)."


def _folder(styles_dir: Path | None) -> Path:
    return styles_dir if styles_dir is not None else get_settings().styles_path


def _publish(names: list[str], styles_dir: Path | None, *, always: bool = False) -> None:
    """With catalog sync on (ATELIER_CATALOG_SYNC), put what was written in the blob store,
    where every other machine's processes fetch it. Only for the settings' own catalog."""
    from atelier.cli.store import blob_store_from_settings, store_refusals
    from atelier.service.catalog_sync import catalog_sync_on, publish_styles

    settings = get_settings()
    if not names or (styles_dir is not None and styles_dir.resolve() != settings.styles_path.resolve()):
        return
    if not always and not catalog_sync_on(settings):
        return
    with store_refusals(), refusals():
        blobs = blob_store_from_settings(settings)
        try:
            published = publish_styles(blobs, settings, names)
        except ValueError as exc:
            raise fail(str(exc)) from None
        finally:
            blobs.close()
    typer.echo(f"published to the blob store ({settings.storage_url}): {', '.join(published)}")


@styles_app.command("list")
def list_styles(
    styles_dir: Path | None = typer.Option(None, "--styles-dir", help=_STYLES_DIR_HELP),
) -> None:
    """The styles in the catalog, and the shipped ones not downloaded yet."""
    from atelier.install.styles import load_catalog, shipped_styles

    folder = _folder(styles_dir)
    mine = {s.name: s for s in load_catalog(folder, include_missing=True)}
    table = Table(title=f"Styles in {folder}", title_justify="left")
    for column in ("name", "title", "artist", "year", "engine", "state"):
        table.add_column(column, no_wrap=column in ("name", "state"))
    for style in sorted(mine.values(), key=lambda s: s.name):
        state = "[green]installed[/]" if style.installed else "[yellow]no painting[/] (download)"
        table.add_row(style.name, style.title, style.artist or "", style.year or "", style.engine, state)
    for style in shipped_styles():
        if style.name not in mine:
            table.add_row(style.name, style.title, style.artist or "", style.year or "", style.engine,
                          "shipped (not downloaded)")
    Console(width=max(Console().width, 120)).print(table)
    if not mine:
        typer.echo("No styles installed yet: `atelier styles download` fetches the shipped ones.", err=True)


@styles_app.command("show")
def show_style(
    name: str = typer.Argument(..., help="The style's name (see `atelier styles list`)."),
    styles_dir: Path | None = typer.Option(None, "--styles-dir", help=_STYLES_DIR_HELP),
    models_dir: Path | None = typer.Option(None, "--models-dir", help="Model weights folder (default: ATELIER_MODELS_DIR)."),
) -> None:
    """Everything about one style, with the recipe it paints with on this machine's weights."""
    from atelier.install.styles import find_style

    with refusals():
        style = find_style(name, _folder(styles_dir))
        lines = _describe(style, models_dir or get_settings().models_path)
    for line in lines:
        typer.echo(line)


def _describe(style: Style, models_dir: Path) -> list[str]:
    from atelier.art.errors import ArtError

    lines = [
        f"name:      {style.name}",
        *(f"title.{lang}:  {title}" for lang, title in style.titles.items()),
        f"artist:    {style.artist or '-'}" + (f" ({style.year})" if style.year else ""),
        f"license:   {style.license or '-'}",
        f"source:    {style.source or '-'}",
        f"folder:    {style.folder}",
        f"painting:  {style.image} ({'present' if style.installed else 'missing: run `atelier styles download ' + style.name + '`'})",
        f"engine:    {style.engine}",
    ]
    for url in style.urls:
        lines.append(f"download:  {url}")
    if style.recipe is not None:
        lines.append(
            f"recipe:    base {style.recipe.base}"
            + (f", passes {style.recipe.passes}" if style.recipe.passes else "")
            + (", original colours" if style.recipe.original_colors else "")
            + f", init {style.recipe.init}"
        )
        try:
            from atelier.service.painting import load_encoder

            encoder, vgg = load_encoder(models_dir)
            recipe = style.recipe.resolve(encoder.available_layers, name=style.name)
            lines.append(f"           with {vgg}: {recipe.summary()}")
            for i, p in enumerate(recipe.passes, start=1):
                lines.append(
                    f"           pass {i}: {p.size} px x {p.iterations} {p.optimizer}, content "
                    f"{','.join(p.content_layers)} x{p.content_weight:g}, style {','.join(p.style_layers)} "
                    f"x{p.style_weight:g}, tv {p.tv_weight:g}, style scale {p.style_scale:g}"
                )
        except ArtError as exc:
            lines.append(f"           (cannot paint here: {exc})")
    f = style.finish
    lines.append(
        f"finish:    auto levels {'on' if f.auto_levels else 'off'} (clip {f.clip_percent:g} %), "
        f"saturation {f.saturation:g}, gamma {f.gamma:g}, contrast {f.contrast:g}, "
        f"smoothing {f.smooth_strength:g} (radius {f.smooth_radius})"
    )
    mark = f.watermark
    if mark is None:
        lines.append("watermark: none")
    else:
        what = f"text {mark.text!r}" if mark.text else f"logo {mark.logo}"
        lines.append(
            f"watermark: {what}, {'tiled' if mark.tiled else mark.position}, opacity {mark.opacity:g}, "
            f"scale {mark.scale:g}"
        )
    return lines


@styles_app.command("add")
def add(
    image: Path = typer.Argument(..., help="The painting (JPEG, PNG, WebP...), at least 256 px a side."),
    name: str = typer.Option(..., "--name", "-n", help="The style's name: lowercase letters, digits, - and _."),
    title: str | None = typer.Option(None, "--title", help="Its name in English (default: from --name)."),
    title_es: str | None = typer.Option(None, "--title-es", help="Its name in Spanish (default: the English one)."),
    artist: str | None = typer.Option(None, "--artist", help="Who painted it."),
    year: str | None = typer.Option(None, "--year", help="When."),
    license: str | None = typer.Option(None, "--license", help="Its licence (e.g. 'Public domain')."),
    source: str | None = typer.Option(None, "--source", help="Where it comes from (a URL)."),
    force: bool = typer.Option(False, "--force", help="Replace a style of that name."),
    styles_dir: Path | None = typer.Option(None, "--styles-dir", help=_STYLES_DIR_HELP),
) -> None:
    """Make a style from one painting with the default recipe; tune its style.toml afterwards."""
    from atelier.install.styles import add_style

    settings = get_settings()
    titles = None
    if title or title_es:
        english = title or name.replace("_", " ").title()
        titles = {"en": english, "es": title_es or english}
    with refusals():
        style = add_style(
            image, name=name, styles_dir=_folder(styles_dir), titles=titles, artist=artist, year=year,
            license=license, source=source, force=force,
            max_pixels=settings.max_image_pixels, max_bytes=settings.max_upload_bytes,
        )
    typer.echo(f"added {style.name} in {style.folder}; edit {style.folder / 'style.toml'} to tune it")
    _publish([style.name], styles_dir)


@styles_app.command("import")
def import_(
    source: Path = typer.Argument(..., help="A style folder, or a folder of style folders."),
    force: bool = typer.Option(False, "--force", help="Replace styles that exist."),
    styles_dir: Path | None = typer.Option(None, "--styles-dir", help=_STYLES_DIR_HELP),
) -> None:
    """Copy style folders (each checked first) into the catalog."""
    from atelier.install.styles import import_styles

    with refusals():
        reports = import_styles(source, styles_dir=_folder(styles_dir), force=force)
    for report in reports:
        typer.echo(f"{report.state:9} {report.name}" + (f"  {report.message}" if report.message else ""))
    failed = [r for r in reports if r.state == "failed"]
    imported = sum(r.state == "imported" for r in reports)
    _publish([r.name for r in reports if r.state == "imported"], styles_dir)
    typer.echo(f"{imported} imported, {len(reports) - imported - len(failed)} skipped, {len(failed)} failed")
    if failed:
        raise fail(f"{len(failed)} style(s) could not be imported: {', '.join(r.name for r in failed)}", code=1)


@styles_app.command("download")
def download(
    names: list[str] | None = typer.Argument(None, help="Styles of the shipped catalog (default: all)."),
    force: bool = typer.Option(False, "--force", help="Fetch again, and replace edited style.toml files."),
    timeout: float = typer.Option(60.0, "--timeout", min=1.0, help="Seconds to wait for a server."),
    styles_dir: Path | None = typer.Option(None, "--styles-dir", help=_STYLES_DIR_HELP),
) -> None:
    """Fetch the public-domain paintings of the shipped catalog (Wikimedia Commons)."""
    from atelier.cli.progressbar import download_bar
    from atelier.install.styles import download_styles

    with refusals(), download_bar() as progress:
        reports = download_styles(names or None, styles_dir=_folder(styles_dir), force=force, timeout=timeout, progress=progress)
    for report in reports:
        typer.echo(f"{report.state:10} {report.name}" + (f"  {report.message}" if report.message else ""))
    failed = [r for r in reports if r.state in ("failed", "offline")]
    done = sum(r.state == "downloaded" for r in reports)
    _publish([r.name for r in reports if r.state == "downloaded"], styles_dir)
    typer.echo(f"{done} downloaded, {sum(r.state == 'present' for r in reports)} already there, {len(failed)} failed")
    if failed:
        raise fail(f"{len(failed)} painting(s) could not be downloaded: {', '.join(r.name for r in failed)}", code=1)


@styles_app.command("publish")
def publish(
    names: list[str] | None = typer.Argument(None, help="Styles of ATELIER_STYLES_DIR (default: every installed one)."),
) -> None:
    """Put styles in the blob store (ATELIER_STORAGE_URL), where every machine's `atelier serve`
    and `atelier worker` fetch them (ATELIER_CATALOG_SYNC). add/import/download do this by
    themselves when catalog sync is on; this is for a catalog made before, or with sync off."""
    from atelier.install.styles import load_catalog

    chosen = names or sorted(s.name for s in load_catalog(get_settings().styles_path))
    if not chosen:
        raise fail(f"no installed styles in {get_settings().styles_path} to publish")
    _publish(chosen, None, always=True)


@styles_app.command("sync")
def sync() -> None:
    """Fetch the catalog from the blob store into ATELIER_STYLES_DIR now (servers and workers
    do it at start and every ATELIER_CATALOG_SYNC_SECONDS by themselves)."""
    from atelier.cli.store import blob_store_from_settings, store_refusals
    from atelier.service.catalog_sync import catalog_mirror

    settings = get_settings()
    with store_refusals():
        blobs = blob_store_from_settings(settings)
        try:
            report = catalog_mirror(blobs, settings).sync()
        finally:
            blobs.close()
    typer.echo(
        f"{settings.styles_path}: {len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.removed)} removed, {len(report.unchanged)} unchanged ({report.bytes_downloaded} bytes fetched)"
    )
    for name, why in report.failed.items():
        typer.echo(f"failed    {name}  {why}", err=True)
    if report.failed:
        raise fail(f"{len(report.failed)} style(s) could not be synced", code=1)
