"""The command line's whole-process figures of issue 17, against an older commit installed side
by side.

    .venv/bin/python scripts/bench_render.py [--baseline ebda9b4] [--runs 5] [-o record.json]

1. A one-off ``atelier render photo.jpg --style painting.jpg -o out.jpg`` of a 1024 px photo
   (MicroAST), as a whole process under ``/usr/bin/time -v``: wall time and peak resident memory,
   this checkout and the baseline alternated, median of ``--runs``.
2. Twenty 1024 px photos in one call (``atelier render p01.jpg ... p20.jpg -o DIR``), whole
   process, against start-up + 1.3x twenty in-process paintings (each: read the photo, paint,
   write the picture, the per-photo work of that call, timed in one warm process). Start-up is the
   one-off's wall time less one warm in-process painting.

Both versions are installed the same way (``pip install --no-deps --target``, not editable) and
run on the same interpreter and dependencies (this .venv), so only Atelier's own code differs.
The load average is printed before and after: run it on a quiet machine. Not a test: it prints
figures (and writes them with -o).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ATELIER = "import sys; from atelier.cli import main; sys.argv[0] = 'atelier'; main()"


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _install(source: Path, target: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True,
    )
    return target


def _checkout(commit: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _working_tree(dest: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True, capture_output=True, text=True).stdout
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def _env(site: Path, work: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("ATELIER_", "MALLOC_")) and k != "PYTHONPATH"}
    return {**keep, "PYTHONPATH": str(site), "ATELIER_DATA_DIR": str(work / "data"),
            "ATELIER_MODELS_DIR": os.environ.get("ATELIER_MODELS_DIR", str(SHARED / "models"))}


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one whole process, from /usr/bin/time -v."""
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", ATELIER, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    assert wall and rss, done.stderr[-2000:]
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    return seconds, int(rss.group(1)) / 1024


def _photos(folder: Path, count: int, size: int) -> list[Path]:
    from PIL import Image

    sources = sorted((SHARED / "images" / "content").glob("*.jpg"))
    folder.mkdir(parents=True)
    made = []
    for index in range(count):
        with Image.open(sources[index % len(sources)]) as image:
            picture = image.convert("RGB")
            # Photos of 1024 px on their longest side (upscaled where a source is smaller); each one different.
            scale = size / max(picture.size)
            picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.Resampling.LANCZOS)
            if index >= len(sources):
                picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            path = folder / f"p{index + 1:02d}.jpg"
            picture.save(path, quality=92)
            made.append(path)
    return made


IN_PROCESS = r"""
import json, sys, time
from pathlib import Path
from atelier.cli.files import read_photo, write_picture
from atelier.cli.render import _instant_painter
photos, style, out = json.loads(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
paint = _instant_painter(style=[style], engine="auto", style_weights=None, alpha=1.0, preserve_color=False, mask=None,
    size=None, style_size=None, device=None, weights=None, vgg=None, decoder=None, models_dir=None, faces=True,
    face_box=[], catalog_style=None, finishing=False, watermark=None, upscale=1)
limits = {"max_pixels": 40_000_000, "max_bytes": 30 * 1024 * 1024}
write_picture(paint(read_photo(photos[0], **limits), lambda _u: None), str(out / "warm.jpg"), format=None)  # warm-up
seconds = []
for index, photo in enumerate(photos):
    started = time.perf_counter()
    write_picture(paint(read_photo(photo, **limits), lambda _u: None), str(out / f"{index}.jpg"), format=None)
    seconds.append(time.perf_counter() - started)
print(json.dumps(seconds))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="ebda9b4", help="the commit to compare with (installed side by side)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--style", type=Path, default=SHARED / "images" / "style" / "starry_night.jpg")
    parser.add_argument("-o", "--output", type=Path, help="write the figures as JSON here")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="atelier-bench-render-"))
    try:
        print(f"load average at start: {_load()}", flush=True)
        sites = {
            "baseline": _install(_checkout(options.baseline, work / "baseline-src"), work / "baseline-site"),
            "this": _install(_working_tree(work / "this-src"), work / "this-site"),
        }
        photos = _photos(work / "photos", options.photos, options.size)
        style = str(options.style)
        one_off = ["render", str(photos[0]), "--style", style, "--engine", "microast", "-o", str(work / "out.jpg")]
        runs: dict[str, list[tuple[float, float]]] = {"baseline": [], "this": []}
        for name in sites:  # an unmeasured first run of each (files into the page cache)
            _timed(one_off, _env(sites[name], work))
        for index in range(options.runs):
            for name in (("baseline", "this") if index % 2 == 0 else ("this", "baseline")):
                runs[name].append(_timed(one_off, _env(sites[name], work)))
                print(f"  one-off {name:8} run {index + 1}: {runs[name][-1][0]:.2f} s, {runs[name][-1][1]:.0f} MiB", flush=True)
        med = {name: (statistics.median(w for w, _ in r), statistics.median(m for _, m in r)) for name, r in runs.items()}

        batch_out = work / "batch-out"
        batch = [_timed(["render", *map(str, photos), "--style", style, "--engine", "microast", "-o", str(batch_out) + "/"],
                        _env(sites["this"], work)) for _ in range(max(1, options.runs // 2))]
        shutil.rmtree(batch_out, ignore_errors=True)
        inproc_out = work / "inproc-out"
        inproc_out.mkdir()
        done = subprocess.run([sys.executable, "-c", IN_PROCESS, json.dumps(list(map(str, photos))), style, str(inproc_out)],
                              env=_env(sites["this"], work), capture_output=True, text=True, check=True)
        seconds = json.loads(done.stdout.strip().splitlines()[-1])
        painting = statistics.median(seconds)
        startup = med["this"][0] - painting
        batch_wall = statistics.median(w for w, _ in batch)
        bound = startup + 1.3 * sum(seconds)
        figures = {
            "machine": f"{os.cpu_count()} cores, load at end {_load()}",
            "baseline": options.baseline,
            "one_off": {
                name: {"wall_s": round(w, 3), "peak_mib": round(m, 1), "runs": [[round(a, 3), round(b, 1)] for a, b in runs[name]]}
                for name, (w, m) in med.items()
            },
            "one_off_ratio": {"wall": round(med["this"][0] / med["baseline"][0], 3), "peak": round(med["this"][1] / med["baseline"][1], 3)},
            "batch": {"photos": len(photos), "wall_s": round(batch_wall, 3), "runs": [round(w, 3) for w, _ in batch],
                      "peak_mib": round(max(m for _, m in batch), 1),
                      "in_process_paintings_s": round(sum(seconds), 3), "in_process_median_s": round(painting, 3),
                      "startup_s": round(startup, 3), "bound_s": round(bound, 3), "within": batch_wall <= bound},
        }
        print(json.dumps(figures, indent=2))
        if options.output:
            options.output.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
