"""Timing several ways of the same work in alternation."""

from __future__ import annotations

import time

from atelier.bench.timing import Row, compare


def test_compare_times_every_way_in_alternation() -> None:
    order: list[str] = []

    def slow() -> None:
        order.append("slow")
        time.sleep(0.02)

    def fast() -> None:
        order.append("fast")

    times = compare({"slow": slow, "fast": fast}, repeat=3, warmup=1)
    assert set(times) == {"slow", "fast"}
    # The clock brackets the work: the sleep is inside it (a lower bound, which a busy machine
    # can only make longer; comparing the two timings is for benchmarks, not tests).
    assert times["slow"].seconds >= 0.02 and times["fast"].seconds >= 0
    assert times["slow"].peak_mb > 0
    # warm-up of each, then rounds that alternate the two
    assert order == ["slow", "fast"] + ["slow", "fast"] * 3


def test_compare_cuts_the_rounds_to_the_budget() -> None:
    runs: list[int] = []
    compare({"one": lambda: (runs.append(1), time.sleep(0.05))}, repeat=50, warmup=0, budget_s=0.1)
    assert 1 <= len(runs) <= 3


def test_a_row_carries_its_baseline_and_figures_in_json() -> None:
    row = Row("adain", "AdaIN", 0.5, baseline_seconds=1.0, ratios={"vs baseline": 2.0}, figures={"cpu_seconds": 0.9})
    data = row.as_dict()
    assert data["baseline_seconds"] == 1.0
    assert data["figures"] == {"cpu_seconds": 0.9}
    assert data["per_second"] == 2.0


def test_a_peak_is_the_works_own_not_an_earlier_ones() -> None:
    import torch

    from atelier.runtime import tune_allocator

    tune_allocator()  # as the CLI: glibc keeps freed memory unless the bench trims it

    def big() -> float:
        return float(torch.ones(100_000_000)[0])  # 400 MB

    def small() -> float:
        return float(torch.ones(2_500_000)[0])  # 10 MB

    times = compare({"big": big, "small": small}, repeat=1, warmup=0)
    assert times["big"].peak_mb - times["small"].peak_mb > 300


def test_timed_runs_keep_the_allocator_warm(monkeypatch) -> None:
    # Trimming the heap before a timed run makes it fault every page back in (20-80 % slower
    # than the product's processes, which keep freed memory): only the memory run trims.
    from atelier.bench import timing

    trims: list[int] = []
    monkeypatch.setattr(timing, "trim_heap", lambda: trims.append(1))
    compare({"a": lambda: None, "b": lambda: None}, repeat=5, warmup=2)
    assert len(trims) == 2  # one per way, before its first (untimed) run
