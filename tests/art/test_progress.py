"""One fraction per piece of work that never goes down, and an estimate of the time left."""

from __future__ import annotations

import pytest

from atelier.art.progress import Eta, Progress, ProgressMeter

# Three passes as a Gatys recipe paints them: 64x48 for 100 iterations, 128x96 for 50, 256x192 for 25.
PLAN = ((64, 48, 100), (128, 96, 50), (256, 192, 25))


def _report(number: int, step: int) -> Progress:
    total = PLAN[number - 1][2]
    return Progress(f"pass {number}/3", step, total, extra={"pass": number, "passes": 3, "plan": PLAN})


def test_passes_are_weighted_by_their_pixels_times_iterations() -> None:
    meter = ProgressMeter()
    work = [w * h * n for w, h, n in PLAN]  # 1 : 2 : 4
    assert meter(_report(1, 100)) == pytest.approx(work[0] / sum(work))  # 1/7, not 1/3
    assert meter(_report(2, 25)) == pytest.approx((work[0] + work[1] / 2) / sum(work))
    assert meter(_report(3, 25)) == pytest.approx(1.0)
    assert (meter.work, meter.passes) == (sum(work), 3)


def test_the_fraction_never_goes_down_across_passes_that_each_start_at_zero() -> None:
    meter = ProgressMeter()
    seen = [meter(_report(n, step)) for n in (1, 2, 3) for step in range(1, PLAN[n - 1][2] + 1)]
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    # a report of an earlier pass (a retry) leaves it where it was
    assert meter(_report(1, 1)) == pytest.approx(1.0)


def test_the_stages_after_the_passes_fill_the_tail() -> None:
    meter = ProgressMeter(tail=0.2)
    assert meter(_report(3, 25)) == pytest.approx(0.8)
    assert meter(Progress("finish", 1, 2)) == pytest.approx(0.9)
    assert meter(Progress("upscale", 1, 4)) == pytest.approx(0.9)  # never down
    assert meter(Progress("done", 2, 2)) == pytest.approx(1.0)


def test_other_engines_count_as_their_own_fraction() -> None:
    meter = ProgressMeter()
    assert [meter(Progress("frames", n, 40)) for n in (10, 20, 40)] == [0.25, 0.5, 1.0]
    with pytest.raises(ValueError):
        ProgressMeter(tail=1.0)


def test_the_estimate_follows_the_measured_rate_and_leaves_pauses_out() -> None:
    now = [0.0]
    eta = Eta(clock=lambda: now[0])
    assert eta.update(0.0) is None  # nothing measured yet
    now[0] = 10.0
    assert eta.update(0.1) == pytest.approx(90.0)
    now[0] = 40.0
    eta.skip(20.0)  # twenty of those thirty seconds went to another job
    assert eta.update(0.2) == pytest.approx(80.0)  # 0.2 in 20 s of its own: 80 s for the rest


def test_the_estimate_starts_from_the_last_jobs_and_moves_to_the_measured_rate() -> None:
    now = [0.0]
    eta = Eta(prior=100.0, settle=0.2, clock=lambda: now[0])
    assert eta.update(0.0) == pytest.approx(100.0)
    now[0] = 5.0
    # 0.1 done in 5 s (twice as fast as last time): halfway between 90 (prior) and 45 (measured)
    assert eta.update(0.1) == pytest.approx(0.5 * 90 + 0.5 * 45)
    now[0] = 10.0
    assert eta.update(0.2) == pytest.approx(40.0)  # settled: the measured rate alone


def test_the_estimate_follows_what_the_work_does_now_rather_than_at_its_start() -> None:
    now = [0.0]
    eta = Eta(window=30.0, clock=lambda: now[0])
    eta.update(0.0)
    fraction = 0.0
    for seconds, gained in [(10.0, 0.05)] * 6 + [(10.0, 0.1)] * 4:  # slow at first, then twice as fast
        now[0] += seconds
        fraction += gained
        last = eta.update(fraction)
    # 0.3 left at 0.1 every 10 s (the last 30 s), not at 0.7 in 100 s (since the start)
    assert fraction == pytest.approx(0.7) and last == pytest.approx(30.0)
