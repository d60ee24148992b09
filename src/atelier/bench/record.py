"""``atelier bench record``: the whole table of issue #9 in one run, each figure beside the
textbook baseline of the same work (:mod:`atelier.bench.baselines`) timed in the same process.

What is measured (the default :data:`FULL` plan; :data:`QUICK` is the same at toy sizes):

* ``adain``: content 256, 512, 1024 px square with a 512 px style -- a new style each time
  (encode photo and style, decode), and a style used before (its statistics cached) -- against
  naoto0804/pytorch-AdaIN's ``style_transfer``. The official relu4_1 weights when installed, else
  random weights in the official layout (speed does not depend on the values).
* ``filter``: candy at 512 and 1024 px against pytorch/examples' TransformerNet.
* ``gatys``: one L-BFGS iteration at 256 and 512 px against the neural-style-pt loop
  (:mod:`atelier.bench.gatys`), the machine's compute floor, and the peak memory of a pass at
  the largest size (4:3), each engine in a fresh process.
* ``microast``: 512, 1024 and 3415x2160 against the official test forward. The ultra-resolution
  pair runs once each in a fresh child process, so that each peak memory is its own.
* ``waifu2x``: upconv_7_photo 2x, input megapixels per second, against upconv_7 written as a
  plain ``nn.Sequential`` (convs, LeakyReLU, ``ConvTranspose2d``) on the whole image (the
  reference runtime itself is ncnn's C++).
* ``service``: the instant API with 1 and 8 concurrent clients (new photo each time,
  micro-batched as the product serves): images/s, p50 and p99 latency.
* ``video``: frames/s painting a 640x360 clip (decode, paint, encode; temporal consistency off)
  with the product's batched painter and with the textbook network frame by frame.

Ratios are ``baseline seconds / Atelier seconds`` (above 1: Atelier is faster). On a shared
machine the CPU-time ratio (in ``figures``) is the steadier of the two.
"""

from __future__ import annotations

import logging
import multiprocessing
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from atelier.art.errors import ModelError
from atelier.bench.engines import STYLE_SIZE, synthetic_image
from atelier.bench.timing import Row, Timed, compare, peak_rss_mb, reset_peak_rss
from atelier.service.engines import EngineLoader

log = logging.getLogger(__name__)

#: The groups of the record, in the order they run.
GROUPS: tuple[str, ...] = ("adain", "filter", "gatys", "microast", "waifu2x", "service", "video")


@dataclass(frozen=True)
class Plan:
    """Sizes (height, width) and effort of one record run."""

    adain: tuple[int, ...] = (256, 512, 1024)
    style: int = STYLE_SIZE
    filter: tuple[int, ...] = (512, 1024)
    gatys: tuple[int, ...] = (256, 512)
    gatys_iterations: int = 3
    gatys_rounds: int = 2
    microast: tuple[tuple[int, int], ...] = ((512, 512), (1024, 1024))
    #: Sizes measured in child processes (fresh peak memory), once each.
    microast_ultra: tuple[tuple[int, int], ...] = ((2160, 3415),)
    waifu2x: tuple[int, int] = (512, 512)
    service_clients: tuple[int, ...] = (1, 8)
    service_seconds: float = 15.0
    service_size: int = 512
    video_size: tuple[int, int] = (360, 640)
    video_frames: int = 16
    repeat: int = 3


FULL = Plan()
#: Toy sizes for tests and a smoke run: every code path, in seconds.
QUICK = Plan(
    adain=(64,), style=64, filter=(64,), gatys=(64,), gatys_iterations=2, gatys_rounds=1,
    microast=((64, 64),), microast_ultra=((64, 96),), waifu2x=(32, 32), service_clients=(1, 2),
    service_seconds=1.0, service_size=64, video_size=(36, 64), video_frames=4, repeat=1,
)  # fmt: skip


def bench_record(
    loader: EngineLoader,
    *,
    plan: Plan = FULL,
    groups: Sequence[str] = GROUPS,
    threads: int = 0,
) -> Iterator[Row]:
    """Every row of the record for the chosen ``groups``, as each is measured."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown group {unknown[0]!r}; choose from {', '.join(GROUPS)}")
    runs: dict[str, Callable[[], Iterator[Row]]] = {
        "adain": lambda: _adain(loader, plan),
        "filter": lambda: _filter(loader, plan),
        "gatys": lambda: _gatys(loader, plan),
        "microast": lambda: _microast(loader, plan),
        "waifu2x": lambda: _waifu2x(loader, plan),
        "service": lambda: _service(loader, plan, threads=threads),
        "video": lambda: _video(loader, plan),
    }
    for group in GROUPS:
        if group not in groups:
            continue
        try:
            yield from runs[group]()
        except ModelError as exc:  # weights not installed: say so in the table, go on
            log.warning("skipping %s: %s", group, exc)
            yield Row(group, group, float("nan"), note=f"skipped: {exc}")


def _row(group: str, name: str, ours: Timed, baseline: Timed | None, *, params: dict, note: str = "", items: int = 1, unit: str = "image") -> Row:
    ratios: dict[str, float] = {}
    figures = {"cpu_seconds": ours.cpu_seconds}
    if ours.gpu_peak_mb is not None:
        figures["gpu_peak_mb"] = ours.gpu_peak_mb
    if baseline is not None:
        ratios["vs baseline"] = baseline.seconds / ours.seconds
        if ours.cpu_seconds > 0:
            # CPU time of all this process's threads: steadier than wall time on a shared machine.
            ratios["CPU time vs baseline"] = baseline.cpu_seconds / ours.cpu_seconds
        figures |= {
            "baseline_cpu_seconds": baseline.cpu_seconds,
            "baseline_peak_mb": baseline.peak_mb,
            "cpu_ratio": baseline.cpu_seconds / max(ours.cpu_seconds, 1e-9),
        }
    return Row(
        group, name, ours.seconds, items=items, unit=unit, peak_mb=ours.peak_mb, params=params, ratios=ratios,
        note=note, baseline_seconds=None if baseline is None else baseline.seconds, figures=figures,
    )


# ----------------------------------------------------------------------------- AdaIN


def _adain_engine(loader: EngineLoader) -> tuple[object, str]:
    try:
        return loader.style_engine("adain", weights="adain"), "official relu4_1 weights"
    except ModelError:
        from atelier.bench.engines import _random_adain

        return _random_adain(loader.device), "relu4_1, random weights in the official layout"


def _adain(loader: EngineLoader, plan: Plan) -> Iterator[Row]:
    from atelier.bench.baselines import TextbookAdaIN

    engine, weights = _adain_engine(loader)
    textbook = TextbookAdaIN(engine)
    device = loader.device
    style = synthetic_image(plan.style, plan.style, seed=1).to(device)
    with torch.inference_mode():
        cached = engine.encode_style(style)  # type: ignore[attr-defined]
    for size in plan.adain:
        photo = synthetic_image(size, size).to(device)

        def new_style() -> object:
            return engine.decode(engine.encode_content(photo), [engine.encode_style(style)])  # type: ignore[attr-defined]

        def style_cached() -> object:
            return engine.decode(engine.encode_content(photo), [cached])  # type: ignore[attr-defined]

        times = compare(
            {"new": new_style, "cached": style_cached, "textbook": lambda: textbook(photo, style)}, repeat=plan.repeat
        )
        params = {"content": f"{size}x{size}", "style": f"{plan.style}x{plan.style}", "device": str(device)}
        note = f"{weights}; vs naoto0804/pytorch-AdaIN"
        yield _row("adain", "AdaIN, new style", times["new"], times["textbook"], params=params, note=note)
        yield _row("adain", "AdaIN, style cached", times["cached"], times["textbook"], params=params, note=note)


# ----------------------------------------------------------------------------- filters


def _filter(loader: EngineLoader, plan: Plan) -> Iterator[Row]:
    from atelier.bench.baselines import TextbookFilter

    net = loader.filter("candy")
    textbook = TextbookFilter(net)
    for size in plan.filter:
        photo = synthetic_image(size, size).to(loader.device)
        times = compare({"atelier": lambda: net.stylize(photo), "textbook": lambda: textbook(photo)}, repeat=plan.repeat)
        yield _row(
            "filter", "filter (candy)", times["atelier"], times["textbook"],
            params={"content": f"{size}x{size}", "device": str(loader.device)},
            note="vs pytorch/examples TransformerNet",
        )  # fmt: skip


# ----------------------------------------------------------------------------- Gatys


def _gatys(loader: EngineLoader, plan: Plan) -> Iterator[Row]:
    """Seconds per iteration beside the textbook loop's (alternating blocks in this process),
    then the peak memory of a pass at the largest size, each engine in a fresh process."""
    from atelier.bench.gatys import bench_gatys

    textbook: Row | None = None
    for row in bench_gatys(
        sizes=plan.gatys, optimizers=("lbfgs",), iterations=plan.gatys_iterations, rounds=plan.gatys_rounds,
        memory_size=max(plan.gatys), memory_iterations=2, backends=("auto",), device=loader.device,
    ):  # fmt: skip
        if row.name.startswith("textbook"):
            textbook = row
            continue
        if row.name.startswith("atelier") and textbook is not None:
            row = replace(
                row,
                baseline_seconds=textbook.seconds,
                ratios={"vs baseline": textbook.seconds / row.seconds} | row.ratios,
                figures=row.figures | ({"baseline_peak_mb": textbook.peak_mb} if textbook.peak_mb is not None else {}),
            )
            row.note = f"vs neural-style-pt loop; {row.note}"
        yield row


# ----------------------------------------------------------------------------- MicroAST


def _microast(loader: EngineLoader, plan: Plan) -> Iterator[Row]:
    from atelier.bench.baselines import TextbookMicroAST

    engine = loader.style_engine("microast")
    textbook = TextbookMicroAST(engine)  # type: ignore[arg-type]
    style = synthetic_image(plan.style, plan.style, seed=1).to(loader.device)
    note = "vs EndyWon/MicroAST test forward"
    for height, width in plan.microast:
        photo = synthetic_image(height, width).to(loader.device)

        def ours() -> object:
            return engine.decode(engine.encode_content(photo), [engine.encode_style(style)])  # type: ignore[attr-defined]

        times = compare({"atelier": ours, "textbook": lambda: textbook(photo, style)}, repeat=plan.repeat)
        yield _row("microast", "MicroAST", times["atelier"], times["textbook"],
                   params={"content": f"{width}x{height}", "device": str(loader.device)}, note=note)  # fmt: skip
    for height, width in plan.microast_ultra:
        results = {
            which: _in_child(_microast_child, which, height, width, str(loader.models_dir), str(loader.device), plan.style)
            for which in ("atelier", "textbook")
        }
        yield _row(
            "microast", "MicroAST, fresh process", results["atelier"], results["textbook"],
            params={"content": f"{width}x{height}", "device": str(loader.device)},
            note=f"one run each in a fresh process (peak = its resident memory); {note}",
        )  # fmt: skip


def _in_child(function: Callable[..., Timed], *args: object) -> Timed:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(function, args)


def _microast_child(which: str, height: int, width: int, models_dir: str, device: str, style_size: int) -> Timed:
    import time

    from atelier.bench.baselines import TextbookMicroAST
    from atelier.runtime import set_threads, tune_allocator

    tune_allocator()  # as the CLI does, for both sides alike
    set_threads(torch.get_num_threads())
    engine = EngineLoader(models_dir=Path(models_dir), device=torch.device(device)).style_engine("microast")
    photo = synthetic_image(height, width)
    style = synthetic_image(style_size, style_size, seed=1)
    if which == "textbook":
        textbook = TextbookMicroAST(engine)  # type: ignore[arg-type]
        del engine

        def work() -> object:
            return textbook(photo.to(device), style.to(device))
    else:

        def work() -> object:
            return engine.decode(engine.encode_content(photo), [engine.encode_style(style)])  # type: ignore[attr-defined]

    reset_peak_rss()
    cuda = device.startswith("cuda")
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    if cuda:
        torch.cuda.synchronize()
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return Timed(time.perf_counter() - wall, time.process_time() - cpu, peak_rss_mb(), gpu_peak)


# ----------------------------------------------------------------------------- waifu2x


def _waifu2x(loader: EngineLoader, plan: Plan) -> Iterator[Row]:
    from atelier.art.engines.upscale import DEFAULT_NOISE, Upscaler
    from atelier.bench.baselines import TextbookUpConv7
    from atelier.install.models import waifu2x_files

    files = waifu2x_files("upconv_7_photo", noise=DEFAULT_NOISE, scale=2, models_dir=loader.models_dir)
    upscaler = Upscaler.load(files, device=loader.device)
    textbook = TextbookUpConv7(files.param, files.bin, device=loader.device)
    height, width = plan.waifu2x
    image = synthetic_image(height, width)
    times = compare({"atelier": lambda: upscaler.upscale(image), "textbook": lambda: textbook(image)}, repeat=plan.repeat)
    row = _row("waifu2x", "waifu2x upconv_7_photo 2x", times["atelier"], times["textbook"],
               params={"input": f"{width}x{height}", "device": str(loader.device)},
               note="vs upconv_7 as a plain nn.Sequential with ConvTranspose2d, whole image")  # fmt: skip
    row.figures["input_megapixels_per_s"] = width * height / 1e6 / times["atelier"].seconds
    yield row


# ----------------------------------------------------------------------------- the instant API


def _service(loader: EngineLoader, plan: Plan, *, threads: int) -> Iterator[Row]:
    from atelier.install import models
    from atelier.bench.service import bench_service

    models.require("microast", models_dir=loader.models_dir)
    yield from bench_service(
        models_dir=loader.models_dir, clients=plan.service_clients, seconds=plan.service_seconds,
        size=plan.service_size, engine="microast", kinds=("fresh",), modes=("batched",),
        first_vs_repick_repeats=0, device=loader.device.type, threads=threads,
    )  # fmt: skip


# ----------------------------------------------------------------------------- video


def _video(loader: EngineLoader, plan: Plan) -> Iterator[Row]:
    from atelier.art.engines.video import stylize_video
    from atelier.bench.baselines import TextbookFilter, TextbookMicroAST
    from atelier.bench.video import painter, synthetic_clip

    height, width = plan.video_size
    with tempfile.TemporaryDirectory(prefix="atelier-bench-record-") as folder:
        work = Path(folder)
        clip = synthetic_clip(work / "clip.mp4", width=width, height=height, frames=plan.video_frames)
        params = {"size": f"{width}x{height}", "frames": plan.video_frames, "device": str(loader.device)}
        for engine in ("microast", "filter"):
            ours = painter(loader, engine)
            if engine == "filter":
                textbook_net = TextbookFilter(loader.filter("candy"))
                style = None
            else:
                textbook_net = TextbookMicroAST(loader.style_engine("microast"))  # type: ignore[assignment, arg-type]
                style = synthetic_image(plan.style, plan.style, seed=1).to(loader.device)

            def textbook(frames: torch.Tensor, net=textbook_net, style=style) -> torch.Tensor:  # type: ignore[no-untyped-def]
                # The textbook way: one frame at a time, the style encoded again for each.
                return torch.cat([net(frame[None].to(loader.device), style) for frame in frames])

            def run(paint: Callable[[torch.Tensor], torch.Tensor], batch: int | None) -> Callable[[], object]:
                return lambda: stylize_video(
                    clip, work / "out.mp4", paint=paint, size=max(width, height), temporal=False,
                    measure_flicker=False, batch_size=batch, device=loader.device,
                )  # fmt: skip

            # Warm both painters up on a frame (first-call allocations, cuDNN autotuning).
            ours(torch.rand(1, 3, height, width))
            textbook(torch.rand(1, 3, height, width))
            # Atelier: the batch the product uses on this device (4 frames on the CPU).
            times = compare({"atelier": run(ours, None), "textbook": run(textbook, 1)}, repeat=1, warmup=0)
            name = "MicroAST" if engine == "microast" else "filter (candy)"
            yield _row(
                "video", f"video, {name}", times["atelier"], times["textbook"], params=params,
                items=plan.video_frames, unit="frame",
                note="decode, paint, encode; temporal off; the product's batches vs textbook frame by frame",
            )  # fmt: skip


# ----------------------------------------------------------------------------- reporting


def markdown_table(rows: Sequence[Row] | Sequence[dict]) -> str:
    """The record as a Markdown table (docs/PERFORMANCE.md): rows or their ``as_dict()``."""
    lines = [
        "| group | what | size | seconds | throughput | peak MiB | baseline s | vs baseline (wall / CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in rows:
        row = item.as_dict() if isinstance(item, Row) else item
        params = row["params"]
        size = params.get("content") or params.get("input") or params.get("size") or ""
        if row["group"] == "service":
            size = f"{params.get('size', '')}, {params.get('clients')} client{'s' if params.get('clients', 1) != 1 else ''}"
        seconds = row["seconds"]
        if seconds != seconds:  # NaN: skipped
            lines.append(f"| {row['group']} | {row['name']} | {size} | - | - | - | - | {row['note']} |")
            continue
        figures = row.get("figures") or {}
        throughput = f"{row['per_second']:.2f} {row['unit']}/s"
        if "input_megapixels_per_s" in figures:
            throughput += f" ({figures['input_megapixels_per_s']:.3f} MP/s)"
        if "p50_ms" in figures:
            throughput += f", p50 {figures['p50_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms"
        ratios = row.get("ratios") or {}
        if "vs baseline" in ratios:
            versus = f"{ratios['vs baseline']:.2f}x"
            if "CPU time vs baseline" in ratios:
                versus += f" / {ratios['CPU time vs baseline']:.2f}x"
        elif "vs 1 client" in ratios:
            versus = f"{ratios['vs 1 client']:.2f}x vs 1 client"
        else:
            versus = "-"
        peak = "-" if row.get("peak_mb") is None else f"{row['peak_mb']:.0f}"
        if figures.get("baseline_peak_mb") is not None and row.get("peak_mb") is not None:
            peak += f" (baseline {figures['baseline_peak_mb']:.0f})"
        baseline = "-" if row.get("baseline_seconds") is None else f"{row['baseline_seconds']:.3f}"
        # A load run's seconds are its length; its figures are the throughput and latencies.
        shown = f"{seconds:.1f} (run)" if row["group"] == "service" else f"{seconds:.3f}"
        lines.append(
            f"| {row['group']} | {row['name']} | {size} | {shown} | {throughput} | {peak} | {baseline} | {versus} |"
        )
    return "\n".join(lines) + "\n"
