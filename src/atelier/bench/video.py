"""Benchmarks of video stylization: frames/s per engine, and what temporal consistency costs
and buys (flicker with it on and off), measured in one run.

The clip is a real one when given (``../shared/video/cutBunny.mp4`` is the reference clip of the
project's record: 640x360, 24 fps); without one a synthetic clip (a smooth random picture
panning across the frame) is written to a temporary folder, which is enough for speed but makes
the flicker figures less telling than those of real footage.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from atelier.art.blocks.devices import VIDEO_BATCH
from atelier.art.errors import ModelError
from atelier.bench.engines import STYLE_SIZE, synthetic_image
from atelier.bench.timing import Row, measure
from atelier.service.engines import EngineLoader

if TYPE_CHECKING:
    from atelier.art.engines.video import VideoReport

log = logging.getLogger(__name__)

#: Engines measured by default: the fastest filter and the fastest arbitrary-style engine.
DEFAULT_ENGINES: tuple[str, ...] = ("filter", "microast")


def synthetic_clip(path: Path, *, width: int = 640, height: int = 360, frames: int = 48, fps: int = 24) -> Path:
    """Write a clip of a smooth random picture panning right and down, 2 and 1 pixels a frame."""
    import av
    import numpy as np

    picture = synthetic_image(height + frames, width + 2 * frames, seed=3)[0]
    array = (picture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for i in range(frames):
            window = np.ascontiguousarray(array[i : i + height, 2 * i : 2 * i + width])
            frame = av.VideoFrame.from_ndarray(window, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def painter(loader: EngineLoader, engine: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A painter for ``filter`` (candy) or an arbitrary-style engine with a synthetic style,
    encoded once, as ``atelier render`` does for a clip."""
    device = loader.device
    if engine == "filter":
        net = loader.filter("candy")
        return lambda frames: net.stylize(frames.to(device))
    model = loader.style_engine(engine)
    with torch.inference_mode():
        style = model.encode_style(synthetic_image(STYLE_SIZE, STYLE_SIZE, seed=1).to(device))

    def paint(frames: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.decode(model.encode_content(frames.to(device)), [style])

    return paint


def bench_video(
    loader: EngineLoader,
    *,
    clip: Path | None = None,
    size: int | None = 640,
    frames: int = 48,
    engines: Sequence[str] = DEFAULT_ENGINES,
    batch_size: int | None = None,
    repeat: int = 1,
) -> Iterator[Row]:
    """Frames/s of each engine on the first ``frames`` frames of ``clip`` at ``size`` (longest
    side), with temporal consistency off and on; flicker of both; and the pipeline alone
    (decode, encode, no painting) for scale.

    The seconds exclude the flicker measure (it is a measurement, not part of the product's
    work); they include decoding, painting, steadying and encoding.
    """
    from atelier.art.engines.video import probe, stylize_video

    with tempfile.TemporaryDirectory(prefix="atelier-bench-video-") as folder:
        work = Path(folder)
        source = clip if clip is not None else synthetic_clip(work / "synthetic.mp4", frames=frames)
        info = probe(source)
        seconds_of_clip = frames / info.fps
        label = source.name if clip is not None else "synthetic pan"

        def run(
            paint: Callable[[torch.Tensor], torch.Tensor], *, temporal: bool, measure_flicker: bool = True
        ) -> tuple[VideoReport, float, float]:
            reports: list[VideoReport] = []

            def once() -> object:
                report = stylize_video(
                    source,
                    work / "out.mp4",
                    paint=paint,
                    size=size,
                    max_seconds=seconds_of_clip,
                    temporal=temporal,
                    measure_flicker=measure_flicker,
                    batch_size=batch_size,
                    device=loader.device,
                )
                reports.append(report)
                return report

            seconds, peak = measure(once, repeat=repeat, warmup=0, budget_s=600.0)
            measured = statistics.median(r.timings.get("measure", 0.0) for r in reports)
            return reports[-1], seconds - measured, peak

        # Warm-up: the first frames through each code path load libraries and allocate.
        identity_report, identity_s, identity_peak = run(lambda x: x, temporal=False, measure_flicker=False)
        params = {
            "clip": label,
            "size": f"{identity_report.width}x{identity_report.height}",
            "frames": identity_report.painted,
            "batch": batch_size or VIDEO_BATCH[loader.device.type][0],
            "device": str(loader.device),
        }
        yield Row(
            "video", "pipeline only (decode + encode)", identity_s, items=identity_report.painted,
            unit="frame", peak_mb=identity_peak, params=params, note=f"identity painter; {_note(identity_report)}",
        )
        for engine in engines:
            try:
                paint = painter(loader, engine)
            except ModelError as exc:
                log.warning("skipping %s: %s", engine, exc)
                yield Row("video", engine, float("nan"), unit="frame", params=params, note=f"skipped: {exc}")
                continue
            name = "filter (candy)" if engine == "filter" else engine
            paint(torch.rand(1, 3, 64, 64))  # warm-up
            off, off_s, off_peak = run(paint, temporal=False)
            yield Row(
                "video", f"{name}, temporal off", off_s, items=off.painted, unit="frame",
                peak_mb=off_peak, params=params, note=_note(off),
            )
            on, on_s, on_peak = run(paint, temporal=True)
            ratios = {"time vs off": on_s / off_s if off_s > 0 else float("nan")}
            if on.flicker is not None and off.flicker:
                ratios["flicker vs off"] = on.flicker / off.flicker
            yield Row(
                "video", f"{name}, temporal on", on_s, items=on.painted, unit="frame",
                peak_mb=on_peak, params=params, ratios=ratios, note=_note(on),
            )


def _note(report: VideoReport) -> str:
    """Flicker (with the input's own) and CPU time per frame: on a busy shared machine the CPU
    time is the steadier figure of the two timings."""
    parts = []
    if report.flicker is not None:
        parts.append(f"flicker {report.flicker:.2f} (input {report.input_flicker:.2f}) of 255")
    if report.painted:
        parts.append(f"CPU {report.cpu_seconds / report.painted:.3f} s/frame")
    return "; ".join(parts)
