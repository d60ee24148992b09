"""Measuring: medians after warm-up, and peak memory per measurement."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


@dataclass
class Row:
    """One line of the record: what was measured and the figures."""

    group: str
    name: str
    seconds: float
    items: int = 1
    unit: str = "image"
    peak_mb: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    note: str = ""
    #: The textbook baseline's seconds for the same work, timed in the same run (None: no baseline).
    baseline_seconds: float | None = None
    #: Other machine-readable figures (latency percentiles in ms, CPU seconds, megapixels/s...).
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "seconds": self.seconds,
            "items": self.items,
            "unit": self.unit,
            "per_second": self.per_second,
            "peak_mb": self.peak_mb,
            "params": self.params,
            "ratios": self.ratios,
            "note": self.note,
            "baseline_seconds": self.baseline_seconds,
            "figures": self.figures,
        }


def trim_heap() -> None:
    """Hand the memory glibc keeps after ``free`` back to the kernel (``malloc_trim(0)``).

    The CLI tells glibc to keep freed memory (see :mod:`atelier.runtime`), so without this the
    resident memory after one measurement stays at that measurement's peak and the next one's
    "peak" would be an earlier figure; with it, a peak is live memory (weights, torch, caches)
    plus what the measured work itself needed.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: peaks stay process high-water marks
        pass


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's resident memory (Linux 4.0+), after
    handing freed heap memory back (:func:`trim_heap`)."""
    trim_heap()
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last reset, in MiB."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    work: Callable[[], object],
    *,
    repeat: int = 3,
    warmup: int = 1,
    budget_s: float = 20.0,
) -> tuple[float, float]:
    """Median seconds of ``work()`` and the peak memory (MiB) while it ran.

    Runs ``warmup`` times untimed, then up to ``repeat`` timed runs -- fewer when a single run
    would take the timed part past ``budget_s`` (one run is always timed).
    """
    first = None
    for _ in range(warmup):
        start = time.perf_counter()
        work()
        _cuda_sync()
        first = time.perf_counter() - start
    if first is not None and first * repeat > budget_s:
        repeat = max(1, int(budget_s // max(first, 1e-9)))
    reset_peak_rss()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        _cuda_sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_rss_mb()


@dataclass
class Timed:
    """Median wall and CPU seconds of one piece of work, and its peak memory (MiB)."""

    seconds: float
    cpu_seconds: float
    peak_mb: float
    #: Peak CUDA memory allocated by torch while it ran (MiB); None when CUDA was not used.
    gpu_peak_mb: float | None = None


def _cuda_in_use() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _cuda_sync() -> None:
    # CUDA kernels run asynchronously: a timing must wait for them to finish.
    if _cuda_in_use():
        import torch

        torch.cuda.synchronize()


def compare(
    works: dict[str, Callable[[], object]],
    *,
    repeat: int = 3,
    warmup: int = 1,
    budget_s: float = 60.0,
) -> dict[str, Timed]:
    """Time several ways of doing the same work in alternation, so that a machine that gets
    busier or quieter during the run moves all of them alike; medians per way.

    Each way first runs ``max(warmup, 1)`` times untimed; the first of those runs right after the heap
    is trimmed and the high-water mark reset, and gives the way's peak memory (a process figure:
    it includes the weights and torch, not what earlier work left in the allocator). Then
    ``repeat`` rounds in which every way runs once, timed (fewer rounds when the first round
    would take the whole past ``budget_s``; one round always runs). The timed runs do NOT trim:
    handing memory back to the kernel before each run would make every run fault its pages in
    again, which the product's own processes avoid (:mod:`atelier.runtime`) -- an earlier version
    of this function did that and made every figure 20-80 % slower than what users get.
    """
    peaks: dict[str, float] = {name: 0.0 for name in works}
    gpu_peaks: dict[str, float | None] = {name: None for name in works}
    for name, work in works.items():
        for run in range(max(warmup, 1)):
            if run == 0:
                reset_peak_rss()
                cuda = _cuda_in_use()
                if cuda:
                    import torch

                    torch.cuda.reset_peak_memory_stats()
            work()
            _cuda_sync()
            if run == 0:
                peaks[name] = peak_rss_mb()
                if _cuda_in_use():
                    import torch

                    gpu_peaks[name] = torch.cuda.max_memory_allocated() / 2**20
    walls: dict[str, list[float]] = {name: [] for name in works}
    cpus: dict[str, list[float]] = {name: [] for name in works}
    rounds = repeat
    index = 0
    while index < rounds:
        started = time.perf_counter()
        for name, work in works.items():
            wall, cpu = time.perf_counter(), time.process_time()
            work()
            _cuda_sync()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
        if index == 0:
            one_round = time.perf_counter() - started
            rounds = max(1, min(repeat, int(budget_s // max(one_round, 1e-9))))
        index += 1
    return {
        name: Timed(statistics.median(walls[name]), statistics.median(cpus[name]), peaks[name], gpu_peaks[name])
        for name in works
    }
