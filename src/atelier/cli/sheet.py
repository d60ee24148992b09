"""``atelier sheet``: every filter and catalog style on one photo, as one labelled sheet."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from atelier.cli.app import app, fail, refusals
from atelier.config import get_settings

_SHEET_HELP = """Paint PHOTO with every filter and every installed catalog style, small, and lay
the results out on one labelled sheet: a quick way to choose a style.

The filters run one network each; the catalog's paintings are painted with MicroAST in one
batch. Styles that cannot be painted here (weights or painting not installed) are listed on
stderr and left off the sheet.

Examples:

  atelier sheet dog.jpg -o sheet.png

  atelier sheet dog.jpg -o sheet.jpg --size 192 --columns 5 --lang es

  cat dog.jpg | atelier sheet - -o - > sheet.png
"""


@app.command("sheet", help=_SHEET_HELP, no_args_is_help=True)
def sheet(
    photo: str = typer.Argument(..., help="The photo (a file, or - for stdin)."),
    output: str = typer.Option(..., "--output", "-o", help="Where to write the sheet (.png, .jpg, .webp, or - for stdout)."),
    size: int = typer.Option(256, "--size", min=16, max=1024, help="Longest side of each tile in pixels."),
    columns: int | None = typer.Option(None, "--columns", min=1, help="Tiles per row (default: about square)."),
    lang: str = typer.Option("en", "--lang", help="Language of the labels (en, es)."),
    tiles_dir: Path | None = typer.Option(None, "--tiles", help="Also write each tile, unlabelled, into this folder (NAME.jpg)."),
    format: str | None = typer.Option(None, "--format", help="Format on stdout (-o -): png, jpeg or webp (default png)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was done as JSON on stdout (not with -o -)."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda (default: ATELIER_DEVICE)."),
    models_dir: Path | None = typer.Option(None, "--models-dir", help="Model weights folder (default: ATELIER_MODELS_DIR)."),
    styles_dir: Path | None = typer.Option(None, "--styles-dir", help="Style catalog folder (default: ATELIER_STYLES_DIR)."),
) -> None:
    from atelier.cli.files import OutputError, check_output, read_photo, write_picture

    settings = get_settings()
    if as_json and output == "-":
        raise fail("--json prints on stdout, so the sheet cannot go there too: give -o FILE")
    try:
        check_output(output, format=format)
    except OutputError as exc:
        raise fail(str(exc)) from None
    from atelier.art.blocks.devices import resolve_device
    from atelier.cli.progressbar import progress_bar
    from atelier.service.catalog import Catalog
    from atelier.service.engines import EngineLoader
    from atelier.service.i18n import gettext, normalize
    from atelier.service.sheet import paint_sheet, sheet_styles

    with refusals():
        picture = read_photo(photo, max_pixels=settings.max_image_pixels, max_bytes=settings.max_upload_bytes)
        loader = EngineLoader(models_dir=models_dir or settings.models_path, device=resolve_device(device or settings.device))
        locale = normalize(lang)
        styles = sheet_styles(Catalog(styles_dir or settings.styles_path), locale=locale)
        with progress_bar("Sheet") as report:
            made = paint_sheet(
                loader, picture, styles=styles, size=size, columns=columns,
                photo_title=gettext(locale, "Your photo"), progress=report,
            )
        where = write_picture(made.image, output, format=format)
        if tiles_dir is not None:
            from atelier.art.blocks.images import save_image

            for tile in made.tiles:
                save_image(tile.image, tiles_dir / f"{tile.name}.jpg", quality=90)
    for gone in made.missing:
        typer.echo(f"left off: {gone.name} ({gone.reason})", err=True)
    if as_json:
        typer.echo(json.dumps({
            "output": where,
            "sheet": list(made.image.size),
            "tile": list(made.size),
            "tiles": [{"name": t.name, "title": t.title, "kind": t.kind, "engine": t.engine} for t in made.tiles],
            "missing": [{"name": m.name, "reason": m.reason} for m in made.missing],
            "batch": made.batch,
            "seconds": round(made.seconds, 3),
            "timings": {k: round(v, 3) for k, v in made.timings.items()},
        }, indent=2))
    elif where != "stdout":
        typer.echo(
            f"wrote {where} ({made.image.width}x{made.image.height}, {len(made.tiles) - 1} styles "
            f"in {made.seconds:.1f} s)", err=True,
        )
