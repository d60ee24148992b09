"""Load on the instant API: concurrent clients calling ``/api/v1/stylize`` on a real server.

Each run starts ``atelier serve`` in a process of its own (on a temporary data dir, SQLite, no
job workers), lets ``clients`` threads call it for ``seconds`` and counts what came back:

* ``one at a time``: ``ATELIER_INSTANT_BATCH_MAX=1`` -- each request is painted alone;
* ``batched``: the micro-batcher on (``batch_max`` and ``window_ms``).

Two kinds of request: ``repick`` (the client's photo was uploaded once and is painted again by
``content_id``: the decoder alone runs) and ``fresh`` (every request sends a photo the server
has not seen: upload, decode, encoder and decoder). Photos and the painting are smooth synthetic
pictures (the speed of these networks does not depend on what is in the picture), all of one
size so that batches can form, and every client paints with the same style.

Also measured, by one client: the first stylize of a new photo against a re-pick of another
(cached) style for it by ``content_id``.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from atelier.bench.engines import synthetic_image
from atelier.bench.server import serve
from atelier.bench.timing import Row
from atelier.extras import need

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("repick", "fresh")
#: How the server paints: each request alone (``ATELIER_INSTANT_BATCH_MAX=1``) or micro-batched.
MODES: tuple[str, ...] = ("one at a time", "batched")


@dataclass
class LoadResult:
    """What the clients of one run saw."""

    completed: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    mean_batch: float | None = None

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1]


def _jpeg(width: int, height: int, seed: int) -> bytes:
    from atelier.art.blocks.images import encode_image, to_pil

    return encode_image(to_pil(synthetic_image(height, width, seed=seed)), format="JPEG", quality=90)


def _unique(jpeg: bytes, n: int) -> bytes:
    """``jpeg`` with a comment segment (JPEG COM marker) carrying ``n`` after its start marker:
    the same pixels, other bytes, so the server's caches (keyed by the file's sha256) miss."""
    text = f"atelier bench {n}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


@contextmanager
def running_server(
    *,
    models_dir: Path,
    batch_max: int,
    window_ms: float,
    max_size: int,
    device: str = "cpu",
    threads: int = 0,
    info: dict[str, int] | None = None,
) -> Iterator[str]:
    """``atelier serve`` on a free port and a temporary data dir; its base URL. ``info`` (when
    given) gets the server's process id under ``"pid"``."""
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as data:
        settings = {
            "ATELIER_DATA_DIR": data,
            "ATELIER_MODELS_DIR": str(models_dir),
            "ATELIER_INSTANT_BATCH_MAX": str(batch_max),
            "ATELIER_INSTANT_BATCH_WINDOW_MS": str(window_ms),
            "ATELIER_INSTANT_MAX_SIZE": str(max_size),
            "ATELIER_WORKERS": "0",
            "ATELIER_DEVICE": device,
            "ATELIER_THREADS": str(threads),
        }
        with serve(settings=settings, log_path=Path(data) / "server.log") as server:
            if info is not None:
                info["pid"] = server.pid
            yield server.url


def _ok(response):  # type: ignore[no-untyped-def]
    """The response, or a RuntimeError with the server's own message (missing weights...)."""
    if response.status_code != 200 and response.status_code != 201:
        try:
            message = response.json()["error"]["message"]
        except Exception:  # noqa: BLE001
            message = response.text[:300]
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code} {message}")
    return response


def _upload(http, data: bytes, kind: str = "content") -> str:  # type: ignore[no-untyped-def]
    response = _ok(http.post("/api/v1/uploads", data={"kind": kind}, files={"file": ("p.jpg", data, "image/jpeg")}))
    return str(response.json()["id"])


def run_load(
    base: str,
    *,
    clients: int,
    seconds: float,
    kind: str,
    width: int,
    height: int,
    engine: str = "microast",
) -> LoadResult:
    """``clients`` threads calling stylize for ``seconds``; what they saw."""
    httpx = need("httpx")

    with httpx.Client(base_url=base, timeout=300) as http:
        style_id = _upload(http, _jpeg(512, 512, seed=99), kind="style")
        photo_ids = [_upload(http, _jpeg(width, height, seed=i)) for i in range(clients)]
    # Fresh photos are made up front so that making them costs the server's cores nothing, and
    # each request sends them with a comment of its own: a photo sent again would be a cache hit
    # (an earlier version cycled through 24 photos, so one client re-sent cached photos while
    # eight clients did not, and the two were not comparable).
    pools = [[_jpeg(width, height, seed=1000 + c * 1000 + k) for k in range(8)] for c in range(clients)] if kind == "fresh" else []
    result = LoadResult()
    lock = threading.Lock()
    window = {"start": 0.0, "stop": 0.0}

    before = {"batches": 0.0, "images": 0.0}

    def open_window() -> None:
        # Runs once, when every client is warm, before any of them is let through.
        before.update(_batch_totals(base))
        window["start"] = time.monotonic()
        window["stop"] = window["start"] + seconds

    start = threading.Barrier(clients + 1, action=open_window)

    def client(index: int) -> None:
        with httpx.Client(base_url=base, timeout=300) as http:

            def call(n: int) -> httpx.Response:
                params = {"style_id": style_id, "engine": engine, "size": str(max(width, height))}
                if kind == "fresh":
                    photo = _unique(pools[index][n % len(pools[index])], index * 10_000_000 + n)
                    return http.post("/api/v1/stylize", data=params, files={"content": ("p.jpg", photo, "image/jpeg")})
                return http.get("/api/v1/stylize", params=params | {"content_id": photo_ids[index]})

            _ok(call(0))  # warm: engine loaded, style and photo encoded
            start.wait()
            n = 1
            while time.monotonic() < window["stop"]:
                began = time.perf_counter()
                try:
                    response = call(n)
                    ok = response.status_code == 200
                    problem = "" if ok else f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, problem = False, f"{type(exc).__name__}: {exc}"
                took = time.perf_counter() - began
                with lock:
                    if ok:
                        result.completed += 1
                        result.latencies.append(took)
                    else:
                        result.errors += 1
                        if len(result.error_samples) < 5:
                            result.error_samples.append(problem)
                n += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join()
    result.seconds = time.monotonic() - window["start"]
    after = _batch_totals(base)
    batches = after["batches"] - before["batches"]
    if batches > 0:
        result.mean_batch = round((after["images"] - before["images"]) / batches, 2)
    return result


def _peak_rss_of(pid: int) -> float | None:
    """The server process's resident-memory high-water mark so far (MiB), or None off Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _batch_totals(base: str) -> dict[str, float]:
    """Batches the server painted and the images in them (over its recent window of 1000
    batches): the difference of two readings is what one load run did, so that runs can share a
    server. Zeros when the server does not say."""
    httpx = need("httpx")

    try:
        batches = httpx.get(f"{base}/api/v1/stats", timeout=10).json()["stylize"]["batches"]
        return {"batches": float(batches["recent"]), "images": float(batches["recent"]) * float(batches["mean_size"] or 0)}
    except Exception:  # noqa: BLE001 - the other figures stand without it
        return {"batches": 0.0, "images": 0.0}


def first_vs_repick(base: str, *, width: int, height: int, repeats: int = 5) -> tuple[list[float], list[float]]:
    """One client: stylize a new photo (sent with the request), then re-pick another style for
    it by content_id; the server-side milliseconds of each, ``repeats`` times."""
    httpx = need("httpx")

    first, repick = [], []
    with httpx.Client(base_url=base, timeout=300) as http:
        styles = [_upload(http, _jpeg(512, 512, seed=s), kind="style") for s in (91, 92)]
        # Warm: engine loaded, both styles encoded.
        warm = _jpeg(width, height, seed=500)
        for style in styles:
            _ok(http.post("/api/v1/stylize", data={"style_id": style}, files={"content": ("w.jpg", warm, "image/jpeg")}))
        for k in range(repeats):
            response = _ok(http.post(
                "/api/v1/stylize", data={"style_id": styles[0]}, files={"content": ("p.jpg", _jpeg(width, height, seed=600 + k), "image/jpeg")}
            ))
            first.append(float(response.headers["X-Stylize-Ms"]))
            again = _ok(http.get("/api/v1/stylize", params={"content_id": response.headers["X-Content-Id"], "style_id": styles[1]}))
            repick.append(float(again.headers["X-Stylize-Ms"]))
    return first, repick


def bench_service(
    *,
    models_dir: Path,
    clients: int | Sequence[int] = (1, 8),
    seconds: float = 30.0,
    size: int = 512,
    engine: str = "microast",
    batch_max: int = 8,
    window_ms: float = 15.0,
    kinds: Sequence[str] = KINDS,
    modes: Sequence[str] = MODES,
    first_vs_repick_repeats: int = 5,
    device: str = "cpu",
    threads: int = 0,
) -> Iterator[Row]:
    """Rows: first stylize vs re-pick (skipped when ``first_vs_repick_repeats`` is 0), then per
    request kind, serving mode (``one at a time``, ``batched``) and number of concurrent clients
    the throughput (images/s) and the latency percentiles (p50, p99) the clients saw.

    The runs of one mode share a server (one start per mode, the client counts in turn); each
    run's mean batch size is its own (from the server's counts before and after); its peak
    memory is the server process's high-water mark at the end of the run (so far, in that
    server). Ratios: batched
    against one at a time with as many clients, and N clients against 1 client in the same mode.
    """
    counts = [clients] if isinstance(clients, int) else list(clients)
    width, height = size, size * 3 // 4
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown request kind {kind!r}; choose from {', '.join(KINDS)}")
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown serving mode {mode!r}; choose from {', '.join(MODES)}")
    if first_vs_repick_repeats > 0:
        with running_server(models_dir=models_dir, batch_max=1, window_ms=0, max_size=size, device=device, threads=threads) as base:
            first, repick = first_vs_repick(base, width=width, height=height, repeats=first_vs_repick_repeats)
        first_s, repick_s = statistics.median(first) / 1000, statistics.median(repick) / 1000
        yield Row("service", "stylize a new photo", first_s, params={"size": f"{width}x{height}", "engine": engine}, note=f"median of {len(first)}, server-side")
        yield Row(
            "service",
            "re-pick a style by content_id",
            repick_s,
            params={"size": f"{width}x{height}", "engine": engine},
            ratios={"faster than a new photo": first_s / repick_s},
            note=f"median of {len(repick)}, server-side",
        )
    for kind in kinds:
        alone: dict[int, float] = {}  # clients -> images/s one at a time
        for mode in modes:
            cap, window = (1, 0.0) if mode == "one at a time" else (batch_max, window_ms)
            single: float | None = None  # images/s of 1 client in this mode
            server: dict[str, int] = {}
            results: dict[int, LoadResult] = {}
            peaks: dict[int, float | None] = {}
            with running_server(models_dir=models_dir, batch_max=cap, window_ms=window, max_size=size, device=device, threads=threads, info=server) as base:
                for count in counts:
                    results[count] = run_load(base, clients=count, seconds=seconds, kind=kind, width=width, height=height, engine=engine)
                    peaks[count] = _peak_rss_of(server["pid"])
            for count, result in results.items():
                ratios = {}
                if mode == "one at a time":
                    alone[count] = result.per_second
                elif alone.get(count):
                    ratios["vs one at a time"] = result.per_second / alone[count]
                if count == 1:
                    single = result.per_second
                elif single:
                    ratios["vs 1 client"] = result.per_second / single
                p50, p99 = result.percentile(50) * 1000, result.percentile(99) * 1000
                note = f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, errors {result.errors}, mean batch {result.mean_batch if result.mean_batch is not None else '?'}"
                if result.error_samples:
                    note += f"; e.g. {result.error_samples[0]}"
                figures = {"p50_ms": p50, "p99_ms": p99, "images_per_s": result.per_second, "errors": float(result.errors)}
                if result.mean_batch is not None:
                    figures["mean_batch"] = float(result.mean_batch)
                yield Row(
                    "service",
                    f"stylize ({kind}), {mode}, {count} client{'s' if count > 1 else ''}",
                    result.seconds,
                    items=result.completed,
                    params={"clients": count, "size": f"{width}x{height}", "engine": engine, "seconds": seconds, "batch_max": cap, "window_ms": window},
                    ratios=ratios,
                    note=note,
                    figures=figures,
                    peak_mb=peaks[count],
                )
