"""Lanes: every job kind's priority and how a running one steps aside (issue 14, item 2)."""

from __future__ import annotations

import pytest

from atelier.service import lanes
from atelier.service.batches import BATCH_JOB
from atelier.service.commission.stages import HD_JOB, PREVIEW_JOB
from atelier.service.videos import VIDEO_JOB


def test_interactive_work_goes_before_paid_hd_and_paid_hd_before_speculative_work() -> None:
    interactive = {lanes.priority_of(kind) for kind in (PREVIEW_JOB, VIDEO_JOB, BATCH_JOB)}
    assert interactive == {lanes.INTERACTIVE}
    assert lanes.priority_of("mail.send") > lanes.INTERACTIVE > lanes.priority_of(HD_JOB) > lanes.SPECULATIVE
    assert lanes.INTERACTIVE > lanes.priority_of("some.new.kind") > lanes.PAID


def test_long_paintings_step_aside_and_short_jobs_do_not() -> None:
    assert lanes.lane_of(HD_JOB).preempt == "pause"  # no work lost: it carries on after
    assert lanes.lane_of("artwork.hd_ahead").preempt == "release"  # speculative: holds nothing
    assert {lanes.lane_of(k).preempt for k in (PREVIEW_JOB, VIDEO_JOB, BATCH_JOB, "mail.send", "x")} == {None}


def test_a_new_kind_registers_its_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lanes, "LANES", dict(lanes.LANES))
    assert lanes.register("artwork.poster", 150, preempt="release") == lanes.Lane(150, "release")
    assert lanes.priority_of("artwork.poster") == 150
    with pytest.raises(ValueError):
        lanes.register("artwork.poster", 1, preempt="later")  # type: ignore[arg-type]


def test_the_migration_gives_waiting_jobs_the_lanes_of_today() -> None:
    from importlib import import_module

    migration = import_module("atelier.store.migrations.versions.0006_job_lanes")
    for kind, priority in migration.PRIORITIES.items():
        assert lanes.priority_of(kind) == priority, kind
