"""The video half of ``atelier render``: a clip in, the painted clip out.

``atelier render`` (cli/render.py) hands a clip here when :func:`is_video_job` says so. The
engine is loaded once, the style encoded once, and :func:`atelier.art.engines.video.stylize_video` does
the rest; this module only turns options and settings into a painter and prints the result.
It imports PyAV and OpenCV only when a clip is actually rendered (a photo need not pay for them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from atelier.cli.app import fail, refusals
from atelier.service.engines import EngineLoader, choose_engine

if TYPE_CHECKING:
    import torch

    from atelier.art.engines.video import VideoReport

# torch is imported where a clip is painted: `atelier render` asks is_video_job of every photo,
# and a photo's render starts its face detection before torch loads (atelier.cli.faces_ahead).

log = logging.getLogger(__name__)

#: Inputs that are always clips.
VIDEO_INPUT_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"})
#: Outputs a clip can be written to. A .gif input is a clip when the output is one of these.
VIDEO_OUTPUT_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".gif"})

Painter = Callable[["torch.Tensor"], "torch.Tensor"]


def is_video_job(content: Path, output: Path) -> bool:
    """Whether ``atelier render CONTENT -o OUTPUT`` paints a clip: a video input, or an (animated)
    GIF written to a video or GIF output. A GIF to .png/.jpg/.webp stays a photo (first frame)."""
    suffix = content.suffix.lower()
    if suffix in VIDEO_INPUT_SUFFIXES:
        return True
    return suffix == ".gif" and output.suffix.lower() in VIDEO_OUTPUT_SUFFIXES


def render_video(
    content: Path,
    output: Path,
    *,
    style: list[str],
    style_weights: list[float] | None,
    engine: str,
    alpha: float,
    preserve_color: bool,
    size: int | None,
    style_size: int,
    device: str | None,
    models_dir: Path | None,
    fps: float | None,
    max_seconds: float | None,
    temporal: bool | None,
) -> None:
    """Paint the clip ``content`` and write it to ``output`` (.mp4, .m4v, .mov or .gif).

    ``temporal`` None means "as ATELIER_VIDEO_TEMPORAL says" (on by default).
    """
    if output.suffix.lower() not in VIDEO_OUTPUT_SUFFIXES:
        raise fail(f"cannot write a video to {output.name}: use a .mp4, .m4v, .mov or .gif output file")
    try:
        from atelier.art.engines import video
    except ImportError as exc:  # PyAV and OpenCV are base dependencies: a damaged install
        raise fail(
            f"video needs PyAV and OpenCV ({exc.name} is missing), which atelier installs: "
            "pip install --force-reinstall atelier"
        ) from None

    from atelier.art.blocks.devices import resolve_device
    from atelier.cli.progressbar import progress_bar
    from atelier.config import get_settings

    settings = get_settings()
    limits = {
        "limit_seconds": settings.video_max_seconds,
        "limit_frames": settings.video_max_frames,
        "limit_pixels": settings.video_max_pixels,
    }
    # An explicit --temporal/--no-temporal wins; without one (None) the setting decides.
    if temporal is None:
        temporal = settings.video_temporal
    with refusals():
        # Refuse a bad clip before spending seconds on loading an engine.
        info = video.probe(content)
        video.check_limits(info, max_seconds=max_seconds, fps=fps, **limits)
        chosen = choose_engine(engine, style)
        loader = EngineLoader(
            models_dir=models_dir or settings.models_path,
            device=resolve_device(device or settings.device),
        )
        paint = make_painter(
            loader,
            engine=chosen,
            styles=style,
            style_weights=style_weights,
            alpha=alpha,
            preserve_color=preserve_color,
            style_size=style_size,
            image_limits={"max_pixels": settings.max_image_pixels, "max_bytes": settings.max_upload_bytes},
        )
        with progress_bar("Painting frames") as report:
            result = video.stylize_video(
                content,
                output,
                paint=paint,
                size=size,
                fps=fps,
                max_seconds=max_seconds,
                temporal=temporal,
                progress=report,
                device=loader.device,
                **limits,
            )
    typer.echo(summary(result), err=True)


def summary(result: VideoReport) -> str:
    """The lines printed after a clip is written: what, how fast, how steady."""
    r = result
    lines = [
        f"wrote {r.output} ({r.width}x{r.height}, {r.frames} frames, {r.fps:.3g} fps, "
        f"{r.duration:.2f} s, sound: {r.audio})",
        f"painted {r.painted} frames in {r.seconds:.1f} s: {r.frames_per_second:.2f} frames/s",
    ]
    if r.flicker is not None:
        steadied = "on" if r.temporal else "off"
        lines.append(
            f"flicker {r.flicker:.2f} with temporal consistency {steadied} (the input's own: "
            f"{r.input_flicker:.2f}; mean warped difference of consecutive frames in 0-255 "
            "levels, lower is steadier)"
        )
    return "\n".join(lines)


def make_painter(
    loader: EngineLoader,
    *,
    engine: str,
    styles: Sequence[str],
    style_weights: Sequence[float] | None = None,
    alpha: float = 1.0,
    preserve_color: bool = False,
    style_size: int = 512,
    image_limits: dict[str, int] | None = None,
) -> Painter:
    """A function from a batch of frames (N, 3, H, W) in 0..1 to the painted batch.

    The engine is loaded and the style images encoded here, once: every frame is painted with
    the same style statistics. ``preserve_color`` keeps each frame's colours by luminance-only
    transfer (:func:`atelier.art.blocks.color.preserve_colors`) rather than by recolouring the style
    to each frame, which would change the style's statistics from frame to frame and flicker.
    """
    import torch

    from atelier.art.blocks.color import preserve_colors
    from atelier.art.blocks.images import decode_image, fit_longest, to_tensor
    from atelier.art.engines.protocol import paint
    from atelier.service.engines import filter_name

    device = loader.device
    if not 0.0 <= alpha <= 1.0:
        raise fail(f"--alpha must be between 0 and 1, got {alpha}")

    if engine == "filter":
        if len(styles) != 1:
            raise fail("the filter engine takes exactly one --style (a filter name)")
        net = loader.filter(filter_name(styles[0]) or styles[0])

        def paint_filter(frames: torch.Tensor) -> torch.Tensor:
            frames = frames.to(device)
            painted = net.stylize(frames, strength=alpha)
            return preserve_colors(painted, frames) if preserve_color else painted

        return paint_filter

    if style_weights is not None and len(style_weights) != len(styles):
        raise fail(f"{len(style_weights)} style weights were given for {len(styles)} styles; give one per --style")
    if image_limits is None:
        from atelier.config import get_settings

        settings = get_settings()
        image_limits = {"max_pixels": settings.max_image_pixels, "max_bytes": settings.max_upload_bytes}
    limits = image_limits
    model = loader.style_engine(engine)
    encoded = []
    for name in styles:
        path = Path(name)
        if not path.exists() and filter_name(name) is not None:
            raise fail(f"{name!r} is a filter, not a style image: use --engine filter (or auto)")
        painting = decode_image(path, **limits)
        with torch.inference_mode():
            encoded.append(model.encode_style(to_tensor(fit_longest(painting, style_size)).to(device)))
    weights = list(style_weights) if style_weights is not None else None

    def paint_style(frames: torch.Tensor) -> torch.Tensor:
        frames = frames.to(device)
        with torch.inference_mode():
            painted = paint(model, frames, encoded, style_weights=weights, alpha=alpha)
        return preserve_colors(painted, frames) if preserve_color else painted

    return paint_style
