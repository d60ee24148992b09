"""A long clip painted by several worker processes at once, against one worker, in one run.

``atelier bench video-parts`` makes a clip of ``seconds`` from a short one (played forwards and
backwards, starting a quarter in, so that it has no cut and no turn falls on a join), then, on
one SQLite database and one local blob store shared by real ``atelier worker`` processes:

1. one worker paints it as one job (``ATELIER_VIDEO_CHUNK_SECONDS=0``);
2. ``workers`` workers paint it cut into ``workers`` parts, joined by the clip job.

The wall time of each is from the order to the painted clip in the store. Then the two clips'
flicker at each join against inside the parts: for every pair of consecutive frames, the mean
absolute difference (8-bit levels) and the warping error of :class:`FlickerMeter` (the
difference after following the input's motion, where the flow is reliable), averaged over the
pairs that straddle a join and over all the others, in the split clip and, at the same pairs,
in the one-job clip.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from atelier.bench.timing import Row

log = logging.getLogger(__name__)


def looped_clip(source: Path, target: Path, *, seconds: float) -> Path:
    """``seconds`` of ``source`` played forwards and backwards (a triangle wave over its frames,
    starting a quarter in): motion without cuts. Silent."""
    import av

    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or 24
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    count = round(float(seconds) * float(rate))
    period = 2 * (len(frames) - 1)
    offset = len(frames) // 4
    with av.open(str(target), "w") as container:
        out = container.add_stream("libx264", rate=rate)
        out.height, out.width = frames[0].shape[:2]
        out.pix_fmt = "yuv420p"
        out.options = {"crf": "18", "preset": "veryfast"}
        for i in range(count):
            k = (i + offset) % period
            image = frames[k if k < len(frames) else period - k]
            for packet in out.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in out.encode(None):
            container.mux(packet)
    return target


def _wait_started(logs: list[Path], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not all(path.exists() and b" started (kinds" in path.read_bytes() for path in logs):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers did not start within {timeout:.0f} s: see {logs[0]}")
        time.sleep(0.2)


def _cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    """Wait for the stopped process; its user + system CPU seconds."""
    try:
        _, _, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # already reaped
        proc.wait(60)
        return float("nan")
    proc.returncode = 0
    return usage.ru_utime + usage.ru_stime


def _frames(path: Path) -> Iterator[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _pairs(painted: Path, clip: Path, size: int) -> tuple[list[float], list[float]]:
    """Per consecutive pair: mean absolute difference and warping error (8-bit levels)."""
    import cv2

    from atelier.art.blocks.flow import FlickerMeter

    meter = FlickerMeter()
    differences: list[float] = []
    previous: np.ndarray | None = None
    for frame, source in zip(_frames(painted), _frames(clip)):
        height, width = frame.shape[:2]
        source = cv2.resize(source, (width, height), interpolation=cv2.INTER_AREA)
        count = len(meter.errors)
        meter.add(source, frame.astype(np.float32) / 255.0)
        if previous is not None:
            differences.append(float(np.abs(frame.astype(np.int16) - previous).mean()))
            if len(meter.errors) == count:  # no reliable pixel: keep the lists aligned
                meter.errors.append(float("nan"))
        previous = frame.astype(np.int16)
    return differences, meter.errors


def _split(values: list[float], joins: list[int]) -> tuple[float, float]:
    """Mean over the pairs ending at a join's first frame, mean over the other pairs."""
    at = {j - 1 for j in joins}
    join = [v for i, v in enumerate(values) if i in at and not np.isnan(v)]
    inside = [v for i, v in enumerate(values) if i not in at and not np.isnan(v)]
    return float(np.mean(join)), float(np.mean(inside))


def bench_video_parts(
    *,
    clip: Path,
    seconds: float,
    workers: int,
    size: int,
    style: str,
    threads: int | None,
    models_dir: Path,
    styles_dir: Path,
) -> list[Row]:
    """Run both (see the module docstring); one row per run and one per flicker figure."""
    from atelier.config import Settings
    from atelier.service import videos
    from atelier.service.context import Services
    from atelier.service.uploads import store_upload

    atelier = str(Path(sys.executable).with_name("atelier"))
    cores = os.cpu_count() or 1
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="atelier-bench-parts-") as folder:
        root = Path(folder)
        long_clip = looped_clip(clip, root / "long.mp4", seconds=seconds)
        common = {
            "ATELIER_DATABASE_URL": f"sqlite:///{root / 'atelier.db'}",
            "ATELIER_STORAGE_URL": (root / "blobs").as_uri(),
            "ATELIER_MODELS_DIR": str(models_dir),
            "ATELIER_STYLES_DIR": str(styles_dir),
            "ATELIER_DEVICE": "cpu",
            "ATELIER_INSTANT_MAX_SIZE": str(size),
            "ATELIER_VIDEO_MAX_SECONDS": str(max(120.0, seconds + 1)),
            "ATELIER_VIDEO_MAX_FRAMES": "100000",
            "ATELIER_VIDEO_CHUNK_SECONDS": str(seconds / workers),
        }
        settings = Settings(data_dir=root / "bench", **{k.removeprefix("ATELIER_").lower(): v for k, v in common.items()})
        services = Services.open(settings)
        try:
            upload, _ = store_upload(services, long_clip.read_bytes(), kind="video", temporary=False)
            results: dict[str, tuple[str, float]] = {}
            for name, count, chunk in (("one worker, one job", 1, 0.0), (f"{workers} workers, {workers} parts", workers, seconds / workers)):
                per = threads or max(1, cores // count)
                env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")} | common | {
                    "ATELIER_VIDEO_CHUNK_SECONDS": str(chunk), "ATELIER_THREADS": str(per),
                }
                services.settings.video_chunk_seconds = chunk
                procs = []
                logs = [root / f"run{len(results)}-worker{n}.log" for n in range(count)]
                for n, path in enumerate(logs):
                    log_file = open(path, "wb")  # noqa: SIM115 - closed below
                    procs.append((subprocess.Popen([atelier, "worker", "--no-mail"], env=env | {"ATELIER_DATA_DIR": str(root / f"w{n}")},
                                                   stdout=log_file, stderr=subprocess.STDOUT), log_file))
                try:
                    _wait_started(logs)  # the clock starts once every worker is up
                    started = time.perf_counter()
                    view = videos.order_video(services, upload=upload, style_name=style, size=size)
                    while (current := videos.get_video(services, view.id)) is not None and current.status not in ("done", "failed"):
                        time.sleep(0.5)
                    wall = time.perf_counter() - started
                finally:
                    cpu = 0.0
                    for proc, log_file in procs:
                        proc.terminate()
                        cpu += _cpu_seconds(proc)
                        log_file.close()
                if current is None or current.status != "done":
                    raise RuntimeError(f"{name}: the clip was not painted (see the worker logs)")
                results[name] = (view.id, wall)
                # CPU seconds of the worker processes (start-up included): the work, which a busy
                # machine does not change the way it changes the wall time.
                rows.append(Row("video-parts", name, wall, items=1, unit="clip", figures={"worker_cpu_seconds": round(cpu, 1)},
                                params={"seconds": seconds, "size": size, "style": style, "workers": count, "threads": per}))
            (one_id, one_wall), (split_id, split_wall) = results.values()
            rows[-1].ratios["vs one worker"] = one_wall / split_wall
            parts = videos.video_parts(services, split_id)
            joined = services.queue.find(videos.VIDEO_JOB, videos.video_key(split_id))
            painting = [float((part.result or {}).get("seconds") or 0) for part in parts]
            rows[-1].ratios["cpu vs one worker"] = rows[-1].figures["worker_cpu_seconds"] / max(rows[-2].figures["worker_cpu_seconds"], 1e-9)
            rows[-1].note = (f"parts painted in {', '.join(f'{t:.1f}' for t in painting)} s by "
                             f"{len({(part.result or {}).get('worker') for part in parts})} workers; "
                             f"join {float(((joined.result if joined else None) or {}).get('seconds') or 0):.1f} s")
            joins = [int(part.payload["frames"][0]) for part in parts[1:]]
            for label, video_id in (("split clip", split_id), ("one-job clip", one_id)):
                painted = root / f"{video_id}.mp4"
                painted.write_bytes(services.blobs.read(videos.video_key(video_id)))
                differences, warping = _pairs(painted, long_clip, size)
                for measure, values in (("frame difference", differences), ("warping error", warping)):
                    at, inside = _split(values, joins)
                    rows.append(Row("video-parts", f"{label}: {measure}", float("nan"), params={"joins": joins},
                                    figures={"at joins": round(at, 3), "inside parts": round(inside, 3)},
                                    note=f"at joins {at:.2f}, inside parts {inside:.2f} (8-bit levels)"))
        finally:
            services.close()
    return rows
