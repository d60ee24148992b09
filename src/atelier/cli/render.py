"""``atelier render``: one photo in, one artwork out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from atelier.cli.app import app, fail, refusals
from atelier.config import get_settings
from atelier.service.engines import ADAIN_WEIGHTS, PAINTING_ENGINES

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from atelier.art.blocks.faces import Faces
    from atelier.art.progress import ProgressCallback
    from atelier.cli.faces_ahead import FacesAhead
    from atelier.install.styles import Style

# The engines (and torch) are imported inside the command: `atelier --help` and the other
# commands should not pay the second or two that importing torch takes.

log = logging.getLogger(__name__)


_RENDER_HELP = """Paint CONTENT (a photo) in the style of a painting or filter and save it to OUT.

Examples:

  atelier render dog.jpg --style starry_night.jpg -o dog-starry.jpg

  atelier render dog.jpg --style candy -o dog-candy.png        (a filter)

  atelier render dog.jpg --style a.jpg --style b.jpg --style-weights 0.7,0.3 -o mix.jpg

  atelier render dog.jpg --style a.jpg --style b.jpg --mask dog-mask.png -o fg-bg.jpg

  atelier render dog.jpg --engine gatys --style starry_night.jpg --passes 350x400,960x200 -o oil.jpg

  atelier render dog.jpg --style starry_night --finish --watermark "My shop" --upscale 2 -o print.jpg
  (a catalog style: its engine, recipe, finishing and mark; see `atelier styles list`)
"""


@app.command("render", help=_RENDER_HELP, no_args_is_help=True)
def render(
    content: list[str] = typer.Argument(
        ..., help="The photo to paint (JPEG, PNG, WebP, BMP, TIFF, GIF), - for stdin, a clip (.mp4, .mov, "
        ".webm...), or several photos and folders of photos (painted in one go into the folder -o names)."
    ),
    output: str = typer.Option(
        ..., "--output", "-o", help="Where to write the artwork (.png, .jpg or .webp), - for stdout, or a "
        "folder for several photos."
    ),
    style: list[str] = typer.Option(
        [],
        "--style",
        "-s",
        help="A style image, a filter name (candy, mosaic, rain_princess, udnie, pointilism) or a "
        "catalog style name (see `atelier styles list`). Repeat to blend several styles.",
    ),
    style_weights: str | None = typer.Option(
        None, "--style-weights", help="Comma-separated blend weights, one per --style (e.g. 0.7,0.3)."
    ),
    engine: str = typer.Option(
        "auto",
        "--engine",
        "-e",
        help="microast (fast, any style), adain (any style), filter (named filters), gatys (slow, "
        "optimised in passes: the commission painter), or auto: filter for a filter name, the "
        "style's own engine for a catalog style, microast otherwise.",
    ),
    alpha: float = typer.Option(1.0, "--alpha", "-a", min=0.0, max=1.0, help="Strength: 1 = full style, 0 = the photo."),
    preserve_color: bool = typer.Option(False, "--preserve-color", help="Keep the photo's colours; take only the style's texture."),
    mask: Path | None = typer.Option(
        None, "--mask", help="A black-and-white image: first style where white, second where black."
    ),
    size: int | None = typer.Option(None, "--size", min=16, help="Longest side of the output in pixels (default: the photo's)."),
    style_size: int | None = typer.Option(
        None, "--style-size", min=16, help="Longest side the style image is scaled to (default: the "
        "output's, at least 512 and at most the painting's own; 512 for videos)."
    ),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda (default: ATELIER_DEVICE)."),
    weights: str | None = typer.Option(
        None, "--weights", help=f"AdaIN weight set: {', '.join(ADAIN_WEIGHTS)} (default: adain, the official pair)."
    ),
    vgg: Path | None = typer.Option(None, "--vgg", help="AdaIN: another VGG encoder file (vgg_normalised.pth layout)."),
    decoder: Path | None = typer.Option(None, "--decoder", help="AdaIN: another decoder file (e.g. one you trained)."),
    models_dir: Path | None = typer.Option(None, "--models-dir", help="Model weights folder (default: ATELIER_MODELS_DIR)."),
    fps: float | None = typer.Option(None, "--fps", min=1.0, help="Video: output frame rate (default: the clip's)."),
    max_seconds: float | None = typer.Option(None, "--max-seconds", min=0.1, help="Video: stylize only the first N seconds."),
    temporal: bool | None = typer.Option(
        None,
        "--temporal/--no-temporal",
        help="Video: keep frames steady with optical-flow blending (default: ATELIER_VIDEO_TEMPORAL, on).",
    ),
    recipe: str | None = typer.Option(
        None, "--recipe", help="Gatys: auto (the best the installed VGG allows), classic (needs the full "
        "VGG-19), shallow or sketch (default: the catalog style's, else auto)."
    ),
    passes: str | None = typer.Option(
        None, "--passes", help="Gatys: sizes x iterations per pass, e.g. 350x400,960x200 (each pass starts "
        "from the previous result)."
    ),
    seed: int = typer.Option(0, "--seed", help="Gatys: seed of the noise init (same seed, same picture)."),
    init: str | None = typer.Option(None, "--init", help="Gatys: start from the photo (content), noise, or an image file."),
    save_every: int = typer.Option(
        0, "--save-every", min=0, help="Gatys: every K iterations write OUT-stem.passP-IIII next to OUT."
    ),
    finishing: bool = typer.Option(
        False, "--finish/--no-finish", help="Finish the picture: the catalog style's colour lift and "
        "smoothing, or a light default."
    ),
    watermark: str | None = typer.Option(None, "--watermark", help="Mark the picture with this text, or with a logo (an image file)."),
    upscale: int = typer.Option(1, "--upscale", min=1, max=4, help="Enlarge the result 2x (or 4x) with waifu2x, any engine."),
    styles_dir: Path | None = typer.Option(None, "--styles-dir", help="Style catalog folder (default: ATELIER_STYLES_DIR)."),
    faces: bool = typer.Option(
        True, "--faces/--no-faces", help="Find faces (people, cats) and paint them finer, so eyes stay readable."
    ),
    face_box: list[str] = typer.Option(
        [], "--face-box", help="A face to paint finer, as X,Y,W,H in the photo's pixels (a dog's: the "
        "detector finds people and cats). Repeat for several; replaces the detection."
    ),
    format: str | None = typer.Option(
        None, "--format", help="png, jpeg or webp: the format on stdout (default png) and in an output "
        "folder (default: each photo's own when writable, else png)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print what was done as JSON on stdout: each picture's size, engine and seconds."
    ),
) -> None:
    settings = get_settings()
    from atelier.cli.files import PHOTO_SUFFIXES, OutputError, batch_outputs, check_output, expand_inputs
    from atelier.cli.render_video import is_video_job, render_video

    try:
        photos, batch = expand_inputs(content)
    except OutputError as exc:
        raise fail(str(exc)) from None
    batch = batch or (output != "-" and Path(output).is_dir())  # one photo into a folder
    if as_json and output == "-":
        raise fail("--json prints on stdout, so the picture cannot go there too: give -o FILE")
    if not batch and photos[0] != "-" and is_video_job(Path(photos[0]), Path(output)):
        if as_json:
            raise fail("--json is for photos; a clip reports on stderr")
        render_video(
            Path(photos[0]),
            Path(output),
            style=style,
            style_weights=_parse_weights(style_weights),
            engine=engine,
            alpha=alpha,
            preserve_color=preserve_color,
            size=size,
            style_size=style_size or 512,
            device=device,
            models_dir=models_dir,
            fps=fps,
            max_seconds=max_seconds,
            temporal=temporal,
        )
        return
    if batch:
        if output == "-" or Path(output).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4"):
            raise fail(f"several photos are written into a folder: give -o FOLDER, not {output}")
        if not photos:
            raise fail(f"no photos in {', '.join(content)} (looked for {', '.join(sorted(PHOTO_SUFFIXES))})")
        targets: list[str] = [str(p) for p in batch_outputs(photos, Path(output), format=format)]
    else:
        targets = [output]
    try:
        check_output(targets[0], format=format)
    except OutputError as exc:
        raise fail(str(exc)) from None
    if upscale not in (1, 2, 4):
        raise fail(f"--upscale takes 2 or 4, not {upscale}")
    with refusals():
        catalog_style = _catalog_style(style, styles_dir or settings.styles_path)
        if engine.lower() in PAINTING_ENGINES or (
            engine.lower() == "auto" and catalog_style is not None and catalog_style.engine in PAINTING_ENGINES
        ):
            if batch or photos[0] == "-" or output == "-":
                raise fail("the gatys engine paints one photo file at a time, into a file")
            if as_json:
                raise fail("--json is for the instant engines; gatys reports on stderr")
            _render_gatys(
                Path(photos[0]), Path(output), style=style, catalog_style=catalog_style,
                style_weights=_parse_weights(style_weights), preserve_color=preserve_color, size=size,
                device=device, models_dir=models_dir, recipe=recipe, passes=passes, seed=seed,
                init=init, save_every=save_every, finishing=finishing, watermark=watermark, upscale=upscale,
            )
            return
        if recipe or passes or save_every or init:
            raise fail("--recipe, --passes, --init and --save-every are for --engine gatys")
        if catalog_style is not None:
            # A catalog painting, painted by an instant engine.
            style = [str(catalog_style.image_path) if s == catalog_style.name else s for s in style]
            if engine.lower() == "auto":
                engine = catalog_style.engine
        # The first photo's faces are looked for in a helper process while this one imports
        # torch and loads the engine (atelier.cli.faces_ahead); only where they would be.
        ahead = {}
        if faces and not face_box and mask is None and alpha > 0 and photos[0] != "-":
            from atelier.cli.faces_ahead import look_ahead

            found = look_ahead(photos[0], size=size, max_pixels=settings.max_image_pixels, max_bytes=settings.max_upload_bytes)
            ahead = {photos[0]: found} if found is not None else {}
        paint = _instant_painter(
            style=style, engine=engine, style_weights=_parse_weights(style_weights), alpha=alpha,
            preserve_color=preserve_color, mask=mask, size=size, style_size=style_size, device=device,
            weights=weights, vgg=vgg, decoder=decoder, models_dir=models_dir, faces=faces,
            face_box=face_box, catalog_style=catalog_style, finishing=finishing, watermark=watermark,
            upscale=upscale,
        )
        done = _paint_all(paint, photos, targets, batch=batch, format=format, ahead=ahead)
    failed = [d for d in done if "error" in d]
    if as_json:
        import json

        from atelier.cli.app import STARTED

        typer.echo(json.dumps({
            "engine": paint.engine,
            "style": style,
            "pictures": done,
            "written": len(done) - len(failed),
            "failed": len(failed),
            "paint_seconds": round(sum(d.get("seconds", 0.0) for d in done), 3),
            "seconds": round(time.perf_counter() - STARTED, 3),
        }, indent=2))
    if failed:
        if batch:
            typer.echo(f"error: {len(failed)} of {len(done)} photos were not painted (see above)", err=True)
        raise typer.Exit(2)


class _Painter:
    """One photo in, its artwork out, with everything that does not depend on the photo (the
    engines, the decoded paintings, their encodings) prepared once for every photo of the call."""

    def __init__(self, engine: str, paint: Callable[[PILImage, ProgressCallback, bool | Faces | None], PILImage]) -> None:
        self.engine = engine
        self._paint = paint

    def __call__(self, photo: PILImage, progress: ProgressCallback, *, faces: bool | Faces | None = None) -> PILImage:
        """``faces``: the faces found already (atelier.cli.faces_ahead), or None to use the options'."""
        return self._paint(photo, progress, faces)


def _instant_painter(
    *,
    style: list[str],
    engine: str,
    style_weights: list[float] | None,
    alpha: float,
    preserve_color: bool,
    mask: Path | None,
    size: int | None,
    style_size: int | None,
    device: str | None,
    weights: str | None,
    vgg: Path | None,
    decoder: Path | None,
    models_dir: Path | None,
    faces: bool,
    face_box: list[str],
    catalog_style: Style | None,
    finishing: bool,
    watermark: str | None,
    upscale: int,
) -> _Painter:
    from atelier.art.blocks.devices import resolve_device
    from atelier.art.blocks.images import decode_image
    from atelier.service.engines import EngineLoader, choose_engine, filter_name
    from atelier.service.stylize import AdaINWeights, stylize_image

    settings = get_settings()
    filters = [filter_name(s) for s in style]
    chosen = choose_engine(engine, style)
    if chosen == "filter" and len(style) != 1:
        raise fail("the filter engine takes exactly one --style (a filter name)")
    loader = EngineLoader(models_dir=models_dir or settings.models_path, device=resolve_device(device or settings.device))
    limits = {"max_pixels": settings.max_image_pixels, "max_bytes": settings.max_upload_bytes}
    # Decoded once, painted on every photo of the call (and encoded once: style_cache).
    paintings = [] if chosen == "filter" else [decode_image(_style_path(s), **limits) for s in style]
    mask_image = decode_image(mask, **limits) if mask is not None else None
    style_cache: dict[object, object] = {}

    def paint(photo: PILImage, report: ProgressCallback, found: bool | Faces | None = None) -> PILImage:
        faces_option = found if found is not None else _faces_option(faces, face_box, photo)
        if chosen == "filter":
            result = stylize_image(
                loader, photo, engine="filter", filter_name=filters[0] or style[0], alpha=alpha,
                preserve_color=preserve_color, size=size, faces=faces_option, progress=report,
            )
        else:
            result = stylize_image(
                loader, photo, engine=chosen, styles=paintings, style_weights=style_weights, alpha=alpha,
                preserve_color=preserve_color, mask=mask_image, size=size, style_size=style_size,
                adain=AdaINWeights(weights=weights, vgg=vgg, decoder=decoder),
                faces=faces_option, style_cache=style_cache, progress=report,
            )
        if finishing or watermark or upscale > 1:
            from atelier.service.painting import finish_spec, postprocess, watermark_spec

            _, result = postprocess(
                result,
                spec=finish_spec(catalog_style, finishing),
                mark=watermark_spec(catalog_style, watermark),
                upscale=upscale,
                models_dir=models_dir or settings.models_path,
                device=loader.device,
                progress=report,
            )
        return result

    return _Painter(chosen, paint)


def _paint_all(
    paint: _Painter, photos: list[str], targets: list[str], *, batch: bool, format: str | None,
    ahead: dict[str, FacesAhead] | None = None,
) -> list[dict[str, object]]:
    """Paint each photo into its target; a batch goes on past a photo it cannot paint (reported
    on stderr and in the result), one photo is refused as usual. Saving a picture overlaps the
    painting of the next (encoding a PNG is a good part of a second at 1024 px)."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from atelier.art.progress import Progress
    from atelier.cli.files import read_photo, write_picture
    from atelier.cli.progressbar import progress_bar
    from atelier.service.errors import REFUSALS

    settings = get_settings()
    limits = {"max_pixels": settings.max_image_pixels, "max_bytes": settings.max_upload_bytes}
    done: list[dict[str, object]] = []
    pending: list[tuple[dict[str, object], Future[str]]] = []

    def finish(record: dict[str, object], saving: Future[str]) -> None:
        try:
            where = saving.result()
        except (*REFUSALS, OSError) as exc:
            record["error"] = f"cannot write {record['output']}: {exc}"
            typer.echo(f"error: {record['input']}: {record['error']}", err=True)
            return
        if where != "stdout":
            typer.echo(f"wrote {where} ({record['width']}x{record['height']})", err=True)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="atelier-save") as saver:
        with progress_bar(f"Painting {len(photos)} photos" if batch else "Painting") as report:
            for index, (source, target) in enumerate(zip(photos, targets), 1):
                record: dict[str, object] = {"input": source, "output": target}
                done.append(record)
                started = time.perf_counter()
                early = ahead.pop(source, None) if ahead else None
                try:
                    photo = read_photo(source, **limits)
                    found = early.result() if early is not None else None
                    result = paint(photo, (lambda _update: None) if batch else report, faces=found)
                except (*REFUSALS, FileNotFoundError, IsADirectoryError) as exc:
                    if not batch:
                        raise
                    record["error"] = str(exc) if isinstance(exc, REFUSALS) else f"no such file: {source}"
                    typer.echo(f"error: {source}: {record['error']}", err=True)
                    continue
                finally:
                    if batch:
                        report(Progress(Path(source).name, index, len(photos)))
                record.update(
                    width=result.width, height=result.height, photo=[photo.width, photo.height],
                    engine=paint.engine, seconds=round(time.perf_counter() - started, 3),
                )
                while pending:  # one picture at most waits to be written
                    finish(*pending.pop(0))
                pending.append((record, saver.submit(write_picture, result, target, format=format)))
            while pending:
                finish(*pending.pop(0))
    for early in (ahead or {}).values():  # a helper whose photo was not painted: reaped
        early.result()
    return done


def _faces_option(detect: bool, boxes: list[str], photo: PILImage) -> bool | Faces:
    """--faces/--no-faces, or the --face-box rectangles (in the photo's pixels; the painter
    scales them with the photo when --size changes it)."""
    if not boxes:
        return detect
    from atelier.art.blocks.faces import faces_from_boxes

    rects = []
    for text in boxes:
        try:
            rect = [float(v) for v in text.split(",")]
        except ValueError:
            rect = []
        if len(rect) != 4:
            raise fail(f"--face-box takes X,Y,W,H (four numbers), not {text!r}")
        rects.append(rect)
    with refusals():
        return faces_from_boxes(photo.width, photo.height, rects)


def _catalog_style(styles: list[str], styles_dir: Path) -> Style | None:
    """The catalog style named by --style (only when the name is not a file), else None."""
    names = [s for s in styles if not Path(s).exists()]
    if not names:
        return None
    from atelier.install.styles import StyleNotFoundError, find_style, valid_name
    from atelier.service.engines import filter_name

    found = []
    for name in names:
        key = name.strip().lower()
        if filter_name(key) is not None or not valid_name(key):
            continue
        try:
            found.append(find_style(key, styles_dir))
        except StyleNotFoundError:
            continue
    if len(found) > 1 or (found and len(styles) > 1):
        raise fail("a catalog style paints alone: give one --style NAME (or blend painting files)")
    return found[0] if found else None


def _render_gatys(
    content: Path,
    output: Path,
    *,
    style: list[str],
    catalog_style: Style | None,
    style_weights: list[float] | None,
    preserve_color: bool,
    size: int | None,
    device: str | None,
    models_dir: Path | None,
    recipe: str | None,
    passes: str | None,
    seed: int,
    init: str | None,
    save_every: int,
    finishing: bool,
    watermark: str | None,
    upscale: int,
) -> None:
    """``--engine gatys`` (or a catalog style whose engine it is): atelier.service.painting."""
    from PIL.Image import Image

    from atelier.art.blocks.devices import resolve_device
    from atelier.art.engines.gatys import parse_passes, recipe_names
    from atelier.art.blocks.images import decode_image, save_image
    from atelier.art.progress import Progress
    from atelier.cli.progressbar import progress_bar
    from atelier.service.painting import render_painting

    settings = get_settings()
    if not style:
        raise fail("give a style: --style PATH (a painting) or --style NAME (a catalog style)")
    if recipe is not None and recipe not in recipe_names():
        raise fail(f"unknown recipe {recipe!r}; choose one of {', '.join(recipe_names())}")
    if passes is not None:
        parse_passes(passes)  # a syntax error is refused before anything loads
    limits = {"max_pixels": settings.max_image_pixels, "max_bytes": settings.max_upload_bytes}
    photo = decode_image(content, **limits)
    paintings = [] if catalog_style is not None else [decode_image(_style_path(s), **limits) for s in style]
    start: str | Image | None = init
    if init is not None and init not in ("content", "noise"):
        start = decode_image(Path(init), **limits)

    def saver(report: ProgressCallback) -> ProgressCallback:
        if not save_every:
            return report

        def both(update: Progress) -> None:
            if update.preview is not None and update.extra and "pass" in update.extra:
                path = output.with_name(f"{output.stem}.pass{update.extra['pass']}-{update.step:04d}{output.suffix}")
                save_image(update.preview, path)
            report(update)

        return both

    with progress_bar("Painting") as report:
        rendered = render_painting(
            photo,
            models_dir=models_dir or settings.models_path,
            style=catalog_style,
            paintings=paintings,
            style_weights=style_weights,
            recipe=recipe,
            passes=passes,
            size=size,
            original_colors=True if preserve_color else None,
            init=start,  # type: ignore[arg-type]
            seed=seed,
            finishing=finishing,
            watermark=watermark if watermark is not None else False,
            upscale=upscale,
            device=resolve_device(device or settings.device),
            preview_every=save_every,
            progress=saver(report),
        )
    save_image(rendered.image, output)
    result = rendered.image
    per_iteration = ", ".join(f"{r.seconds_per_iteration:.2f}" for r in rendered.passes)
    typer.echo(
        f"wrote {output} ({result.width}x{result.height}; {rendered.recipe.summary()}; "
        f"{rendered.seconds:.0f} s, s/iteration per pass: {per_iteration})",
        err=True,
    )


def _style_path(style: str) -> Path:
    from atelier.service.engines import filter_name

    path = Path(style)
    if not path.exists() and filter_name(style) is not None:
        raise fail(f"{style!r} is a filter, not a style image: use --engine filter (or auto)")
    return path


def _parse_weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise fail(f"--style-weights takes numbers separated by commas, got {text!r}") from None
