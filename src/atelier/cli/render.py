"""``atelier render``: one photo in, one artwork out."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from atelier.cli import app, fail, refusals
from atelier.config import get_settings

# The engines (and torch) are imported inside the command: `atelier --help` and the other
# commands should not pay the second or two that importing torch takes.
ENGINES = ("microast", "adain", "filter")
ADAIN_WEIGHTS = ("adain", "ust-conv3_1", "ust-conv2_1", "ust-conv1_1")
WRITABLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

log = logging.getLogger(__name__)

#: Inputs taken as video by their suffix (animated GIFs are video too when the output is).
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"})


def is_video_path(path: Path) -> bool:
    """Whether ``atelier render`` treats ``path`` as a clip rather than a photo."""
    return path.suffix.lower() in VIDEO_SUFFIXES

_RENDER_HELP = """Paint CONTENT (a photo) in the style of a painting or filter and save it to OUT.

Examples:

  atelier render dog.jpg --style starry_night.jpg -o dog-starry.jpg

  atelier render dog.jpg --style candy -o dog-candy.png        (a filter)

  atelier render dog.jpg --style a.jpg --style b.jpg --style-weights 0.7,0.3 -o mix.jpg

  atelier render dog.jpg --style a.jpg --style b.jpg --mask dog-mask.png -o fg-bg.jpg
"""


@app.command("render", help=_RENDER_HELP, no_args_is_help=True)
def render(
    content: Path = typer.Argument(..., help="The photo to paint (JPEG, PNG, WebP, BMP, TIFF, GIF)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the artwork (.png, .jpg or .webp)."),
    style: list[str] = typer.Option(
        [],
        "--style",
        "-s",
        help="A style image, or a filter name (candy, mosaic, rain_princess, udnie, pointilism). "
        "Repeat to blend several styles.",
    ),
    style_weights: str | None = typer.Option(
        None, "--style-weights", help="Comma-separated blend weights, one per --style (e.g. 0.7,0.3)."
    ),
    engine: str = typer.Option(
        "auto",
        "--engine",
        "-e",
        help="microast (fast, any style), adain (any style), filter (named filters), or auto: "
        "filter for a filter name, microast otherwise.",
    ),
    alpha: float = typer.Option(1.0, "--alpha", "-a", min=0.0, max=1.0, help="Strength: 1 = full style, 0 = the photo."),
    preserve_color: bool = typer.Option(False, "--preserve-color", help="Keep the photo's colours; take only the style's texture."),
    mask: Path | None = typer.Option(
        None, "--mask", help="A black-and-white image: first style where white, second where black."
    ),
    size: int | None = typer.Option(None, "--size", min=16, help="Longest side of the output in pixels (default: the photo's)."),
    style_size: int = typer.Option(512, "--style-size", min=16, help="Longest side the style image is scaled to."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda (default: ATELIER_DEVICE)."),
    weights: str | None = typer.Option(
        None, "--weights", help=f"AdaIN weight set: {', '.join(ADAIN_WEIGHTS)} (default: adain, the official pair)."
    ),
    vgg: Path | None = typer.Option(None, "--vgg", help="AdaIN: another VGG encoder file (vgg_normalised.pth layout)."),
    decoder: Path | None = typer.Option(None, "--decoder", help="AdaIN: another decoder file (e.g. one you trained)."),
    models_dir: Path | None = typer.Option(None, "--models-dir", help="Model weights folder (default: ATELIER_MODELS_DIR)."),
    fps: float | None = typer.Option(None, "--fps", min=1.0, help="Video: output frame rate (default: the clip's)."),
    max_seconds: float | None = typer.Option(None, "--max-seconds", min=0.1, help="Video: stylize only the first N seconds."),
    temporal: bool = typer.Option(True, "--temporal/--no-temporal", help="Video: keep frames steady (optical-flow blending)."),
) -> None:
    settings = get_settings()
    if is_video_path(content):
        from atelier.cli.render_video import render_video

        render_video(
            content,
            output,
            style=style,
            style_weights=_parse_weights(style_weights),
            engine=engine,
            alpha=alpha,
            preserve_color=preserve_color,
            size=size,
            style_size=style_size,
            device=device,
            models_dir=models_dir,
            fps=fps,
            max_seconds=max_seconds,
            temporal=temporal,
        )
        return
    from atelier.art.devices import resolve_device
    from atelier.art.images import decode_image, save_image
    from atelier.cli.progressbar import progress_bar
    from atelier.service.engines import EngineLoader, filter_name
    from atelier.service.instant import AdaINWeights, stylize_image

    if output.suffix.lower() not in WRITABLE_SUFFIXES:
        raise fail(f"cannot write {output.name}: use a .png, .jpg or .webp output file")
    with refusals():
        filters = [filter_name(s) for s in style]
        chosen = _choose_engine(engine, style, filters)
        weights_list = _parse_weights(style_weights)
        loader = EngineLoader(
            models_dir=models_dir or settings.models_path,
            device=resolve_device(device or settings.device),
        )
        limits = {"max_pixels": settings.max_image_pixels, "max_bytes": settings.max_upload_bytes}
        photo = decode_image(content, **limits)
        with progress_bar("Painting") as report:
            if chosen == "filter":
                if len(style) != 1:
                    raise fail("the filter engine takes exactly one --style (a filter name)")
                result = stylize_image(
                    loader,
                    photo,
                    engine="filter",
                    filter_name=filters[0] or style[0],
                    alpha=alpha,
                    preserve_color=preserve_color,
                    size=size,
                    progress=report,
                )
            else:
                paintings = [decode_image(_style_path(s), **limits) for s in style]
                result = stylize_image(
                    loader,
                    photo,
                    engine=chosen,
                    styles=paintings,
                    style_weights=weights_list,
                    alpha=alpha,
                    preserve_color=preserve_color,
                    mask=decode_image(mask, **limits) if mask is not None else None,
                    size=size,
                    style_size=style_size,
                    adain=AdaINWeights(weights=weights, vgg=vgg, decoder=decoder),
                    progress=report,
                )
        save_image(result, output)
    typer.echo(f"wrote {output} ({result.width}x{result.height})", err=True)


def _choose_engine(engine: str, styles: list[str], filters: list[str | None]) -> str:
    from atelier.service import engines as known

    assert known.ENGINES == ENGINES and known.ADAIN_WEIGHTS == ADAIN_WEIGHTS, "keep the lists in step"
    engine = engine.lower()
    if engine not in (*ENGINES, "auto"):
        raise fail(f"unknown engine {engine!r}; choose one of auto, {', '.join(ENGINES)}")
    if not styles:
        raise fail("give a style: --style PATH (a painting) or --style NAME (a filter)")
    if engine == "auto":
        return "filter" if all(filters) and len(styles) == 1 else "microast"
    return engine


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
