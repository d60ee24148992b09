"""``atelier bench``: figures and ratios measured in one run on this machine."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from atelier.cli.app import app, fail, refusals
from atelier.config import Settings, get_settings

if TYPE_CHECKING:
    from atelier.service.engines import EngineLoader

bench_app = typer.Typer(
    help="Measure speed and memory on this machine. Not a test: figures, and ratios taken in "
    "the same run.",
    no_args_is_help=False,
    invoke_without_command=True,
)
app.add_typer(bench_app, name="bench")


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _loader(settings: Settings, device: str | None) -> EngineLoader:
    """The engines on ``device`` (default: the setting); cuda without a GPU is refused here."""
    from atelier.art.blocks.devices import resolve_device
    from atelier.service.engines import EngineLoader

    return EngineLoader(models_dir=settings.models_path, device=resolve_device(device or settings.device))


@bench_app.callback()
def _default(ctx: typer.Context) -> None:
    """Without a group: the whole record (``atelier bench record``)."""
    if ctx.invoked_subcommand is None:
        # Called as a function, a typer command's defaults are OptionInfo objects: give them.
        record(quick=False, groups="all", skip="", repeat=None, service_seconds=None, device=None, as_json=False, markdown=False, output=None)


@bench_app.command("record")
def record(
    quick: bool = typer.Option(False, "--quick", help="Toy sizes and one repeat: checks every path in seconds, figures meaningless."),
    groups: str = typer.Option(
        "all", "--groups", help="Groups to run, comma-separated: adain, filter, gatys, microast, waifu2x, service, video (or all)."
    ),
    skip: str = typer.Option("", "--skip", help="Groups to leave out, comma-separated."),
    repeat: int | None = typer.Option(None, "--repeat", min=1, help="Timed rounds per figure (default 3; 1 with --quick)."),
    service_seconds: float | None = typer.Option(None, "--service-seconds", min=0.5, help="Length of each instant-API load run (default 15 s)."),
    device: str | None = typer.Option(None, help="auto, cpu or cuda (default: ATELIER_DEVICE)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table (for docs/PERFORMANCE.md) instead of the terminal table."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Also write the record (machine, command, rows) to this JSON file."),
) -> None:
    """The issue #9 table in one run: every engine at its sizes against the textbook PyTorch
    baseline of the same work, timed in alternation in this process (ratio = baseline / Atelier)."""
    import dataclasses
    import sys
    import time

    from atelier.bench.record import FULL, GROUPS, QUICK, bench_record, markdown_table

    settings = get_settings()
    chosen = list(GROUPS) if groups.strip() in ("", "all") else [g.strip() for g in groups.split(",") if g.strip()]
    left_out = {g.strip() for g in skip.split(",") if g.strip()}
    unknown = [g for g in [*chosen, *left_out] if g not in GROUPS]
    if unknown:
        raise fail(f"unknown group {unknown[0]!r}; choose from {', '.join(GROUPS)}")
    chosen = [g for g in chosen if g not in left_out]
    plan = QUICK if quick else FULL
    if repeat is not None:
        plan = dataclasses.replace(plan, repeat=repeat)
    if service_seconds is not None:
        plan = dataclasses.replace(plan, service_seconds=service_seconds)
    with refusals():
        loader = _loader(settings, device)
        started = time.perf_counter()
        rows = list(_echo_json(bench_record(loader, plan=plan, groups=chosen, threads=settings.threads), as_json=as_json))
        elapsed = time.perf_counter() - started
    if markdown and not as_json:
        typer.echo(f"Measured on {_machine(loader.device)}, torch {_torch_version()}, in {elapsed:.0f} s.\n")
        typer.echo(markdown_table(rows), nl=False)
    elif not as_json:
        emit(rows, as_json=False, title=f"Performance record on {_machine(loader.device)} ({elapsed:.0f} s)", progress=False)
    if output is not None:
        document = {
            "command": "atelier " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "atelier bench record",
            "machine": _machine(loader.device),
            "torch": _torch_version(),
            "plan": "quick" if quick else "full",
            "seconds": elapsed,
            "rows": [row.as_dict() for row in rows],
        }
        output.write_text(json.dumps(document, indent=2, default=_nan_safe) + "\n")


def _echo_json(rows, *, as_json: bool):  # type: ignore[no-untyped-def]
    """Pass rows through, printing each as a JSON line as it comes when asked to."""
    for row in rows:
        if as_json:
            typer.echo(json.dumps(row.as_dict()))
        else:
            Console(stderr=True).print(f"[dim]measured {row.group}: {row.name} {row.params}[/dim]", highlight=False)
        yield row


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def _nan_safe(value):  # type: ignore[no-untyped-def]
    return str(value)


@bench_app.command("engines")
def engines(
    sizes: str = typer.Option("512,1024", help="Square sizes in pixels, comma-separated."),
    batches: str = typer.Option("1,8", help="Batch sizes, comma-separated."),
    only: list[str] = typer.Option([], "--only", help="Only engines whose name contains this (repeatable)."),
    repeat: int = typer.Option(3, min=1, help="Timed runs per figure (the median is printed)."),
    device: str | None = typer.Option(None, help="auto, cpu or cuda (default: ATELIER_DEVICE)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """Images/s of each instant engine at each size and batch, and the re-pick speed-up."""
    from atelier.bench.engines import bench_engines

    settings = get_settings()
    with refusals():
        loader = _loader(settings, device)
        rows = bench_engines(loader, sizes=_ints(sizes), batches=_ints(batches), repeat=repeat, only=only or None)
        emit(rows, as_json=as_json, title=f"Instant engines on {_machine(loader.device)}")


@bench_app.command("gatys")
def gatys(
    sizes: str = typer.Option("256,512", help="Square sizes in pixels, comma-separated."),
    optimizers: str = typer.Option("lbfgs,adam", help="lbfgs, adam or both, comma-separated."),
    layers: str = typer.Option("classic", help="classic (relu1_1..relu5_1, content relu4_2) or shallow (to relu3_1)."),
    iterations: int = typer.Option(4, min=2, help="Iterations per block (each engine runs one block per round)."),
    rounds: int = typer.Option(5, min=1, help="Alternating rounds of textbook and Atelier blocks."),
    memory_size: int = typer.Option(960, "--memory-size", min=0, help="Size of the pass whose peak memory is measured (0: skip)."),
    backends: str = typer.Option("auto,onednn", help="Atelier's convolution backends to time: auto, nnpack, onednn, plain."),
    device: str | None = typer.Option(None, help="auto, cpu or cuda (default: ATELIER_DEVICE)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """Seconds per Gatys iteration against the textbook (neural-style-pt) loop, in one run."""
    from atelier.art.blocks.devices import resolve_device
    from atelier.bench.gatys import LAYER_SETS, bench_gatys

    settings = get_settings()
    chosen = [o.strip() for o in optimizers.split(",") if o.strip()]
    if not chosen or any(o not in ("lbfgs", "adam") for o in chosen):
        raise fail(f"--optimizers takes lbfgs, adam or both, not {optimizers!r}")
    if layers not in LAYER_SETS:
        raise fail(f"--layers takes {' or '.join(LAYER_SETS)}, not {layers!r}")
    with refusals():
        target = resolve_device(device or settings.device)
        rows = bench_gatys(
            sizes=_ints(sizes), optimizers=chosen, layers=layers, iterations=iterations, rounds=rounds,
            memory_size=memory_size, backends=[b.strip() for b in backends.split(",") if b.strip()], device=target,
        )
        emit(rows, as_json=as_json, title=f"Gatys on {_machine(target)}")


@bench_app.command("service")
def service(
    clients: str = typer.Option("1,8", help="Concurrent clients per run, comma-separated (one run each)."),
    seconds: float = typer.Option(30.0, min=1.0, help="How long each load run lasts."),
    size: int = typer.Option(512, min=64, help="Longest side of the photos (4:3)."),
    engine: str = typer.Option("microast", help="microast or adain."),
    batch_max: int = typer.Option(8, min=1, help="Batch cap of the batched runs."),
    window_ms: float = typer.Option(15.0, min=0.0, help="Batch window of the batched runs, ms."),
    kinds: str = typer.Option("repick,fresh", help="Request kinds: repick (content_id) and/or fresh (a new photo each time)."),
    device: str | None = typer.Option(None, help="auto, cpu or cuda (default: ATELIER_DEVICE)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """The instant API under load: 1 and N clients calling /api/v1/stylize on a real server, one
    at a time against micro-batched (images/s, p50 and p99 latency); and a new photo against a
    re-pick by content_id."""
    from atelier.install import models
    from atelier.art.blocks.devices import resolve_device
    from atelier.bench.service import bench_service

    settings = get_settings()
    with refusals():
        resolve_device(device or settings.device)  # refuse cuda without a GPU here, not in the server
        models.require(engine if engine == "microast" else "adain", models_dir=settings.models_path)
        rows = bench_service(
            models_dir=settings.models_path,
            clients=_ints(clients),
            seconds=seconds,
            size=size,
            engine=engine,
            batch_max=batch_max,
            window_ms=window_ms,
            kinds=[k.strip() for k in kinds.split(",") if k.strip()],
            device=device or settings.device,
            threads=settings.threads,
        )
        emit(rows, as_json=as_json, title=f"Instant API under load, {clients} clients, {seconds:g} s per run")


@bench_app.command("video")
def video(
    clip: Path | None = typer.Option(None, "--clip", help="A clip to paint (default: a synthetic 640x360 pan)."),
    size: int = typer.Option(640, min=16, help="Longest side of the painted frames."),
    frames: int = typer.Option(48, min=2, help="Frames painted per run."),
    only: list[str] = typer.Option([], "--only", help="filter and/or microast (repeatable)."),
    repeat: int = typer.Option(1, min=1, help="Timed runs per figure."),
    device: str | None = typer.Option(None, help="auto, cpu or cuda (default: ATELIER_DEVICE)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """Frames/s of each engine on a clip, with temporal consistency off and on, and the flicker."""
    from atelier.bench.video import DEFAULT_ENGINES, bench_video

    settings = get_settings()
    with refusals():
        loader = _loader(settings, device)
        rows = bench_video(
            loader, clip=clip, size=size, frames=frames, engines=only or DEFAULT_ENGINES, repeat=repeat
        )
        emit(rows, as_json=as_json, title=f"Video on {_machine(loader.device)}")


@bench_app.command("video-parts")
def video_parts(
    clip: Path = typer.Option(..., "--clip", exists=True, dir_okay=False, help="A short clip to loop (e.g. ../shared/video/cutBunny.mp4)."),
    seconds: float = typer.Option(60.0, min=2, help="Length of the clip painted."),
    workers: int = typer.Option(3, min=2, help="Worker processes (and parts) of the split run."),
    size: int = typer.Option(256, min=16, help="Longest side of the painted frames."),
    style: str = typer.Option("candy", help="A filter or catalog style."),
    threads: int | None = typer.Option(None, min=1, help="Threads per worker (default: the cores shared among the workers)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """A long clip painted by one worker as one job, then by N worker processes in N parts, in
    one run: the wall times, and the flicker at the joins against inside the parts."""
    from atelier.bench.video_parts import bench_video_parts

    settings = get_settings()
    with refusals():
        rows = bench_video_parts(
            clip=clip, seconds=seconds, workers=workers, size=size, style=style, threads=threads,
            models_dir=settings.models_path, styles_dir=settings.styles_path,
        )
        emit(rows, as_json=as_json, title=f"A {seconds:g} s clip in parts on {platform.processor() or platform.machine()}, {os.cpu_count()} cores")


@bench_app.command("commission")
def commission(
    photo: Path | None = typer.Option(None, "--photo", exists=True, dir_okay=False, help="The photo ordered (default: ../shared/images/content/kite.jpg)."),
    painting: Path | None = typer.Option(None, "--painting", exists=True, dir_okay=False, help="The catalog style's painting (default: ../shared/images/style/starry_night.jpg)."),
    passes: str | None = typer.Option(None, "--passes", help="The style's passes, SIZExITERATIONS,... (default: the recipe the installed VGG weights allow). Small ones make a quick try."),
    preview_size: int | None = typer.Option(None, "--preview-size", min=32, help="ATELIER_PREVIEW_MAX_SIZE of the servers (default: the setting's default)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also run today's path (the HD painted again from the photo, nothing ahead)."),
    new: bool = typer.Option(True, "--new/--no-new", help="Run the new path (the HD on from the preview, painted ahead)."),
    settle: float = typer.Option(60.0, min=0, help="Seconds after the download mail before the server's memory is read again."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """A commission's whole journey in real processes (atelier serve, embedded default): order
    -> preview mail, pay (demo) -> download mail, today's path beside the new one in one run,
    with the HD's final objective and the server's memory before, at peak and after."""
    from atelier.bench.commission import bench_commission

    settings = get_settings()
    shared = Path(__file__).resolve().parents[3].parent / "shared" / "images"  # a checkout beside ../shared
    photo = photo or shared / "content" / "kite.jpg"
    painting = painting or shared / "style" / "starry_night.jpg"
    for path in (photo, painting):
        if not path.is_file():
            raise fail(f"{path} does not exist; give --photo and --painting")
    with refusals():
        rows = bench_commission(
            models_dir=settings.models_path, photo=photo, painting=painting, passes=passes, preview_size=preview_size,
            baseline=baseline, new=new, settle=settle,
        )
        for row in rows:
            typer.echo(json.dumps({"name": row.name, **row.figures, "recipe": row.note}) if not as_json else json.dumps(row.as_dict()))
        if not as_json:
            emit(rows, as_json=False, title=f"A commission's journey on {platform.processor() or platform.machine()}, {os.cpu_count()} cores", progress=False)


@bench_app.command("quality")
def quality(
    size: int = typer.Option(256, "--size", min=32, help="The preview size painted and measured at (the commission preview's default, ATELIER_PREVIEW_MAX_SIZE)."),
    photos: str = typer.Option("", "--photos", help="Comma-separated: pet, portrait, landscape, faces (files of --images) or image paths (default: the four)."),
    styles: str = typer.Option("", "--styles", help="Comma-separated catalog styles (default: every commission style of ATELIER_STYLES_DIR)."),
    images: Path | None = typer.Option(None, "--images", file_okay=False, help="Where the fixed photos are (default: ../shared/images/content beside the checkout)."),
    keep: Path | None = typer.Option(None, "--keep", file_okay=False, help="Also save every picture painted in this folder (PNG)."),
    device: str | None = typer.Option(None, help="auto, cpu or cuda (default: ATELIER_DEVICE)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per row instead of a table."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table (for docs/QUALITY.md) instead of the terminal table."),
) -> None:
    """The commission's picture against MicroAST's for each photo and catalog style: the style
    distance to the painting (1 = the photo, 0 = the painting) and the content distance to the
    photo, and whether the commission is the better picture (style and content no higher)."""
    from atelier.bench.quality import COLUMNS, bench_quality, markdown_table, photo_paths

    settings = get_settings()
    folder = images or Path(__file__).resolve().parents[3].parent / "shared" / "images" / "content"
    status = Console(stderr=True)
    try:
        chosen = photo_paths([p.strip() for p in photos.split(",") if p.strip()], images_dir=folder)
    except ValueError as exc:
        raise fail(str(exc)) from None
    with refusals():
        try:
            rows = bench_quality(
                models_dir=settings.models_path, styles_dir=settings.styles_path, photos=chosen,
                styles=[s.strip() for s in styles.split(",") if s.strip()] or None, size=size,
                device=device or settings.device, keep=keep,
                report=lambda line: status.print(f"[dim]{line}[/dim]", highlight=False),
            )
        except ValueError as exc:
            raise fail(str(exc)) from None
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.as_dict()))
    elif markdown:
        typer.echo(markdown_table(rows), nl=False)
    else:
        table = Table(title=f"Quality at {size} px on {platform.processor() or platform.machine()} (style: 1 = the photo, 0 = the painting)")
        for name, _ in COLUMNS:
            table.add_column(name)
        for row in rows:
            table.add_row(*(cell(row) for _, cell in COLUMNS))
        Console(width=max(Console().width, 160)).print(table)


def _machine(device) -> str:  # type: ignore[no-untyped-def]
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def emit(rows, *, as_json: bool, title: str, progress: bool = True) -> None:  # type: ignore[no-untyped-def]
    """Print rows as they come (a table at the end, or one JSON object per line)."""
    # A table of figures is read in a log or a wide terminal: never wrap it at 80 columns.
    console = Console(width=max(Console().width, 160))
    status = Console(stderr=True)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.as_dict()))
        return
    table = Table(title=title)
    for column in ("what", "params", "seconds", "per second", "peak MiB", "baseline s", "ratios", "note"):
        table.add_column(column)
    for row in rows:
        if progress:
            status.print(f"[dim]measured {row.name} {row.params}[/dim]", highlight=False)
        table.add_row(*_cells(row))
    console.print(table)


def _cells(row) -> list[str]:  # type: ignore[no-untyped-def]
    params = " ".join(f"{k}={v}" for k, v in row.params.items() if k != "device")
    if math.isnan(row.seconds):
        return [row.name, params, "-", "-", "-", "-", "-", row.note]
    return [
        row.name,
        params,
        f"{row.seconds:.3f}",
        f"{row.per_second:.2f} {row.unit}/s",
        "-" if row.peak_mb is None else f"{row.peak_mb:.0f}",
        "-" if row.baseline_seconds is None else f"{row.baseline_seconds:.3f}",
        ", ".join(f"{k} {v:.2f}x" for k, v in row.ratios.items()),
        row.note,
    ]


@bench_app.command("load")
def load(
    clients: int = typer.Option(20, min=1, help="Concurrent clients, one request at a time each."),
    seconds: float = typer.Option(60.0, min=1.0, help="Length of the measured window."),
    size: int = typer.Option(128, min=32, help="Longest side of the stylize calls (MicroAST)."),
    workers: int = typer.Option(0, min=0, help="Job workers inside the server under load."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Uploads, stylize calls and status polls from CLIENTS asyncio clients against a fresh
    `atelier serve` on loopback: latency per kind (p50, p99), 5xx answers (there should be
    none), and the server's memory at the start, middle and end of the window."""
    from atelier.bench.load import run_load

    settings = get_settings()
    with refusals():
        report = run_load(models_dir=settings.models_path, clients=clients, seconds=seconds, size=size, workers=workers)
    summary = report.summary()
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        table = Table(title=f"{clients} clients for {seconds:.0f} s ({summary['per_second']} requests/s)")
        for column in ("kind", "requests", "p50 ms", "p99 ms", "max ms", "answers", "transport failures"):
            table.add_column(column)
        for name, figures in summary["kinds"].items():
            answers = " ".join(f"{status}: {n}" for status, n in figures["statuses"].items())
            failures = " ".join(f"{kind}: {n}" for kind, n in figures["failures"].items()) or "0"
            table.add_row(name, str(figures["requests"]), str(figures["p50_ms"]), str(figures["p99_ms"]), str(figures["max_ms"]), answers, failures)
        Console(width=max(Console().width, 120)).print(table)
        rss = summary["rss_mb"]
        typer.echo(
            f"server RSS MiB: start {rss['start']}, middle {rss['middle']}, end {rss['end']} (max {rss['max']}; "
            f"every 10 s: {', '.join(str(mb) for mb in rss['every_10s'])}); "
            f"server CPU {summary['server_cpu_seconds']} s; 5xx answers: {summary['server_errors']}; "
            f"load average at the end: {', '.join(f'{x:.2f}' for x in summary['load_average_at_end'] or ())}"
        )
    if report.server_errors or report.failures:
        raise typer.Exit(1)
