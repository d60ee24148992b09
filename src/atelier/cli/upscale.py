"""``atelier upscale``: a picture in, the same picture at twice the size out (waifu2x)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from atelier.cli.app import app, fail, refusals
from atelier.config import get_settings

# Kept in step with atelier.art.engines.upscale (imported lazily: torch is slow to import); a test
# checks that they agree. The default noise level is DEFAULT_NOISE there: see why there.
MODELS = ("upconv_7_photo", "upconv_7_art", "cunet")
DEFAULT_NOISE = 2
WRITABLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

_HELP = """Upscale IMAGE 2x with waifu2x and save it to OUT.

Models: upconv_7_photo (photos, the default), upconv_7_art (drawings and flat-colour art), cunet (sharpest, slower).

--noise removes JPEG artefacts and grain while upscaling: -1 none, 0 (light) to 3 (strong); 2 by default. --scale 1 with cunet only denoises.

Examples:

  atelier upscale painting.png -o painting-2x.png

  atelier upscale scan.jpg -o scan-2x.png --model cunet --noise 1

  atelier upscale big.jpg -o big-2x.jpg --tile 256          (less memory)
"""


@app.command("upscale", help=_HELP, no_args_is_help=True)
def upscale(
    image: Path = typer.Argument(..., help="The picture to upscale (JPEG, PNG, WebP, BMP, TIFF, GIF)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the result (.png, .jpg or .webp)."),
    model: str = typer.Option("upconv_7_photo", "--model", "-m", help=f"One of {', '.join(MODELS)}."),
    noise: int = typer.Option(
        DEFAULT_NOISE, "--noise", "-n", min=-1, max=3, help="Denoise level: -1 none, 0 (light) .. 3 (strong)."
    ),
    scale: int = typer.Option(2, "--scale", min=1, max=2, help="2 upscales; 1 only denoises (cunet)."),
    tile: int | None = typer.Option(
        None, "--tile", min=16, help="Tile side in pixels: smaller uses less memory (default: the model's)."
    ),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda (default: ATELIER_DEVICE)."),
    models_dir: Path | None = typer.Option(None, "--models-dir", help="Model weights folder (default: ATELIER_MODELS_DIR)."),
) -> None:
    settings = get_settings()
    if model not in MODELS:
        raise fail(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if output.suffix.lower() not in WRITABLE_SUFFIXES:
        raise fail(f"cannot write {output.name}: use a .png, .jpg or .webp output file")
    from PIL import Image

    from atelier.art.blocks.devices import resolve_device
    from atelier.art.blocks.images import decode_image, save_image
    from atelier.art.engines.upscale import Upscaler
    from atelier.install.models import waifu2x_files
    from atelier.cli.progressbar import progress_bar
    from atelier.runtime import set_threads

    with refusals():
        set_threads(settings.threads)
        files = waifu2x_files(model, noise=noise, scale=scale, models_dir=models_dir or settings.models_path)
        upscaler = Upscaler.load(files, device=resolve_device(device or settings.device))
        picture = decode_image(
            image, max_pixels=settings.max_image_pixels, max_bytes=settings.max_upload_bytes, keep_alpha=True
        )
        alpha = picture.getchannel("A")
        started = time.perf_counter()
        with progress_bar("Upscaling") as report:
            result = upscaler.upscale_image(picture.convert("RGB"), tile=tile, progress=report)
        if alpha.getextrema() != (255, 255):
            # waifu2x is RGB only; transparency follows with a plain bicubic resize, as in
            # waifu2x-ncnn-vulkan.
            result.putalpha(alpha.resize(result.size, Image.Resampling.BICUBIC))
        seconds = time.perf_counter() - started
        save_image(result, output)
    typer.echo(f"wrote {output} ({result.width}x{result.height}, {seconds:.1f} s)", err=True)
