"""A bounded load test of the whole web service: ``atelier bench load``.

It starts ``atelier serve`` in a process of its own (temporary data dir, SQLite, local blobs, no
job workers unless asked), orders a few commissions to have something to poll, then lets
``clients`` asyncio clients (one HTTP connection each, one request at a time, no think time)
run for ``seconds``, each picking at random among three kinds of request:

* ``upload``: ``POST /api/v1/uploads`` of a photo (from a pool of small synthetic JPEGs);
* ``stylize``: ``GET /api/v1/stylize`` of the client's latest upload in the catalog painting
  with MicroAST at ``size`` pixels (the cheapest painting engine);
* ``status``: ``GET /api/v1/artworks/{id}`` of one of the commissions (a database read and the
  job's place in the queue).

It records every answer's status and latency per kind (p50, p99, max), counts 5xx answers and
transport failures, and samples the server's resident memory (``/proc/<pid>/status``) every
second: the figures at the start, middle and end of the window tell a leak (RSS still rising)
from caches filling up and concurrency's high-water mark (which the warm-up reaches before the
window opens: every photo of the pool uploaded and painted once, then the mix for a tenth of the
window, unmeasured).

The server runs with the per-address rate limits off: every client here is 127.0.0.1, which the
limits would rightly take for one abusive client.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atelier.bench.server import Server, serve
from atelier.extras import need

log = logging.getLogger(__name__)

#: The kinds of request and how often each is picked.
MIX: dict[str, float] = {"upload": 0.25, "stylize": 0.35, "status": 0.40}
#: Distinct photos the clients upload (cycled; caches see each one in the warm-up).
PHOTO_POOL = 16
#: Commissions ordered before the window, for the status polls.
COMMISSIONS = 4
STYLE_NAME = "load_painting"


@dataclass
class KindFigures:
    """What the clients saw for one kind of request."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # transport errors by type

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def percentile(self, q: float) -> float:
        """The q-th percentile of the latencies in milliseconds (nan if none)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        if len(ordered) == 1:
            return ordered[0] * 1000
        return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1] * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.count,
            "p50_ms": round(self.percentile(50), 1),
            "p99_ms": round(self.percentile(99), 1),
            "max_ms": round(max(self.latencies) * 1000, 1) if self.latencies else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "failures": dict(self.failures),
        }


@dataclass
class LoadReport:
    """A run: per-kind figures, the server's memory over time, and the setting it ran under."""

    clients: int
    seconds: float
    size: int
    kinds: dict[str, KindFigures] = field(default_factory=lambda: {k: KindFigures() for k in MIX})
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the window, MiB)
    warmup_seconds: float = 0.0
    server_cpu_seconds: float | None = None
    load_average: tuple[float, float, float] | None = None

    @property
    def requests(self) -> int:
        return sum(k.count for k in self.kinds.values())

    @property
    def server_errors(self) -> int:
        return sum(k.server_errors for k in self.kinds.values())

    @property
    def failures(self) -> int:
        return sum(sum(k.failures.values()) for k in self.kinds.values())

    def rss_at(self, fraction: float) -> float | None:
        """The sample nearest to ``fraction`` (0 start, 1 end) of the window, in MiB."""
        if not self.rss_mb:
            return None
        target = fraction * self.seconds
        return min(self.rss_mb, key=lambda sample: abs(sample[0] - target))[1]

    def summary(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "seconds": self.seconds,
            "size": self.size,
            "requests": self.requests,
            "per_second": round(self.requests / self.seconds, 2) if self.seconds else None,
            "server_errors": self.server_errors,
            "transport_failures": self.failures,
            "kinds": {name: figures.summary() for name, figures in self.kinds.items()},
            "rss_mb": {
                "start": self.rss_at(0.0),
                "middle": self.rss_at(0.5),
                "end": self.rss_at(1.0),
                "max": max((mb for _, mb in self.rss_mb), default=None),
                # The curve, for telling a plateau (caches, pools) from a steady climb (a leak).
                "every_10s": [mb for t, mb in self.rss_mb if int(t) % 10 == 0 and t - int(t) < 1.0][: int(self.seconds // 10) + 1],
            },
            "warmup_seconds": round(self.warmup_seconds, 1),
            "server_cpu_seconds": self.server_cpu_seconds,
            "load_average_at_end": self.load_average,
        }


# ------------------------------------------------------------------------------------------------
# the server


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MiB (Linux), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def synthetic_jpeg(width: int, height: int, seed: int) -> bytes:
    """A smooth random picture as JPEG bytes (the engines' speed does not depend on content)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = (rng.random((max(2, height // 32), max(2, width // 32), 3)) * 255).astype("uint8")
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


@contextmanager
def load_server(*, models_dir: Path, workers: int = 0, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``atelier serve`` on a free loopback port and a temporary data dir, with a catalog
    painting (a synthetic one) that commissions can be ordered in."""
    from atelier.install.styles import StyleRecipe, add_style

    with tempfile.TemporaryDirectory(prefix="atelier-load-") as temp:
        data = Path(temp)
        painting = data / "painting.jpg"
        painting.write_bytes(synthetic_jpeg(384, 384, seed=7))
        add_style(painting, name=STYLE_NAME, styles_dir=data / "styles", titles={"en": "Load test"}, recipe=StyleRecipe(base="auto", passes="48x4"))
        settings = {
            "ATELIER_DATA_DIR": str(data / "data"),
            "ATELIER_STYLES_DIR": str(data / "styles"),
            "ATELIER_MODELS_DIR": str(models_dir),
            "ATELIER_DEVICE": "cpu",
            "ATELIER_INSTANT_MAX_SIZE": "512",
            "ATELIER_INSTANT_CACHE_MB": "64",
            "ATELIER_RATE_LIMIT_UPLOADS_PER_IP": "0",
            "ATELIER_RATE_LIMIT_PAINTINGS_PER_IP": "0",
            "ATELIER_RATE_LIMIT_COMMISSIONS_PER_IP": "0",
            "ATELIER_RATE_LIMIT_COMMISSIONS_PER_EMAIL": "0",
        }
        settings.update(env or {})
        with serve(settings=settings, log_path=data / "server.log", workers=workers, ready_path="/readyz", start_timeout=180) as server:
            yield server


# ------------------------------------------------------------------------------------------------
# the clients


def _expect(response: Any, *statuses: int) -> Any:
    if response.status_code not in statuses:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text[:300]}")
    return response


async def _prepare(url: str, photos: list[bytes], size: int) -> tuple[list[str], list[str]]:
    """Warm-up: every photo uploaded and painted once (caches and engines filled before the
    window), and the commissions to poll ordered. The upload ids and the artwork status URLs."""
    httpx = need("httpx")

    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        upload_ids = []
        for photo in photos:
            response = _expect(await http.post("/api/v1/uploads", files={"file": ("p.jpg", photo, "image/jpeg")}), 201)
            upload_ids.append(response.json()["id"])
        painted = await asyncio.gather(
            *(
                http.get("/api/v1/stylize", params={"content_id": upload_id, "style_name": STYLE_NAME, "size": size})
                for upload_id in upload_ids
            )
        )
        for response in painted:
            _expect(response, 200)
        status_urls = []
        for n in range(COMMISSIONS):
            response = _expect(
                await http.post(
                    "/api/v1/artworks",
                    data={"content_id": upload_ids[n % len(upload_ids)], "style_name": STYLE_NAME, "email": f"load{n}@example.com", "locale": "en"},
                ),
                201,
            )
            status_urls.append(response.json()["status_url"])
    return upload_ids, status_urls


async def _client(
    index: int, url: str, report: LoadReport, stop_at: float, photos: list[bytes], upload_ids: list[str], status_urls: list[str], size: int
) -> None:
    httpx = need("httpx")

    rng = random.Random(index)
    kinds, weights = list(MIX), list(MIX.values())
    latest = upload_ids[index % len(upload_ids)]
    n = index
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while time.monotonic() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            began = time.perf_counter()
            try:
                if kind == "upload":
                    n += 1
                    response = await http.post("/api/v1/uploads", files={"file": ("p.jpg", photos[n % len(photos)], "image/jpeg")})
                    if response.status_code == 201:
                        latest = response.json()["id"]
                elif kind == "stylize":
                    response = await http.get("/api/v1/stylize", params={"content_id": latest, "style_name": STYLE_NAME, "size": size})
                else:
                    response = await http.get(rng.choice(status_urls))
            except httpx.HTTPError as exc:
                report.kinds[kind].failures[type(exc).__name__] += 1
                continue
            figures = report.kinds[kind]
            figures.latencies.append(time.perf_counter() - began)
            figures.statuses[response.status_code] += 1


async def _sample_memory(pid: int | None, report: LoadReport, started: float, stop_at: float) -> None:
    if pid is None:
        return
    while True:
        now = time.monotonic()
        mb = rss_mb(pid)
        if mb is not None:
            report.rss_mb.append((round(now - started, 2), round(mb, 1)))
        if now >= stop_at:
            return
        await asyncio.sleep(min(1.0, max(0.0, stop_at - now)))


async def run_load_async(url: str, *, clients: int, seconds: float, size: int = 128, pid: int | None = None) -> LoadReport:
    """``clients`` clients against the server at ``url`` for ``seconds``; ``pid`` (the server's
    process) for the memory samples."""
    report = LoadReport(clients=clients, seconds=seconds, size=size)
    photos = [synthetic_jpeg(320, 240, seed=seed) for seed in range(PHOTO_POOL)]
    began = time.monotonic()
    upload_ids, status_urls = await _prepare(url, photos, size)
    # Then the same mix, unmeasured, for a tenth of the window (3 s at least): the memory that
    # many requests in flight at once need (threads, buffers, the allocator's high-water mark)
    # is taken before the first sample, so that what grows in the window is what leaks.
    rehearsal = LoadReport(clients=clients, seconds=seconds, size=size)
    rehearse_until = time.monotonic() + max(3.0, seconds / 10)
    await asyncio.gather(*(_client(i, url, rehearsal, rehearse_until, photos, upload_ids, status_urls, size) for i in range(clients)))
    report.warmup_seconds = time.monotonic() - began
    cpu_before = cpu_seconds(pid) if pid is not None else None
    started = time.monotonic()
    stop_at = started + seconds
    await asyncio.gather(
        _sample_memory(pid, report, started, stop_at),
        *(_client(i, url, report, stop_at, photos, upload_ids, status_urls, size) for i in range(clients)),
    )
    # The window is the configured one: the last requests may end a little after it.
    cpu_after = cpu_seconds(pid) if pid is not None else None
    if cpu_before is not None and cpu_after is not None:
        report.server_cpu_seconds = round(cpu_after - cpu_before, 1)
    report.load_average = os.getloadavg() if hasattr(os, "getloadavg") else None
    return report


def run_load(*, models_dir: Path, clients: int, seconds: float, size: int = 128, workers: int = 0) -> LoadReport:
    """Start a server and put it under load; the report."""
    with load_server(models_dir=models_dir, workers=workers) as server:
        report = asyncio.run(run_load_async(server.url, clients=clients, seconds=seconds, size=size, pid=server.pid))
        if report.server_errors:
            log.warning("server errors during the load; its log:\n%s", server.log_path.read_text(errors="replace")[-4000:])
        return report


__all__ = ["KindFigures", "LoadReport", "load_server", "rss_mb", "run_load", "run_load_async"]
