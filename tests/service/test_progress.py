"""Where a job stands, in numbers and in words: the stage, the seconds left, the place in line,
and one fraction for a whole commission (issue 14, item 3)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from atelier.service import lanes
from atelier.service import progress as progress_module
from atelier.service.context import Services
from atelier.service.progress import PREVIEW_SHARE, JobProgress, commission_fraction, describe, estimate_wait

from tests.service.service_fixtures import make_settings


@pytest.fixture
def services(tmp_path: Path, models_dir: Path) -> Iterator[Services]:
    services = Services.open(make_settings(tmp_path, models_dir))
    yield services
    services.close()


def _running(services: Services, kind: str, *, progress: float, detail: dict) -> int:  # type: ignore[type-arg]
    job_id = services.queue.enqueue(kind, priority=lanes.priority_of(kind))
    (claimed,) = services.queue.claim("w", above=None)
    assert claimed.id == job_id
    assert services.queue.set_progress(job_id, "w", progress, detail=detail)
    return job_id


def test_a_painting_job_says_its_pass_in_words_in_english_and_spanish(services: Services) -> None:
    job_id = _running(services, "artwork.hd", progress=0.4, detail={"stage": "pass 2/3", "pass": 2, "passes": 3, "eta_seconds": 120})
    job = describe(services, services.queue.get(job_id))  # type: ignore[arg-type]
    assert (job.stage, job.pass_, job.passes, job.progress) == ("pass 2/3", 2, 3, 0.4)
    assert job.stage_text("en") == "Painting, 2 of 3 passes"
    assert job.stage_text("es") == "Pintando, pasada 2 de 3"
    assert job.eta_seconds is not None and 110 < job.eta_seconds <= 120  # counted down since written


def test_the_words_for_every_stage_exist_in_both_languages() -> None:
    def words(stage: str, **fields: object) -> tuple[str | None, str | None]:
        values: dict[str, object] = dict(kind="k", status="running", progress=0.5, stage=stage, pass_=None, passes=None, step=None, total=None, eta_seconds=None, position=None, previews=0)
        values.update(fields)
        p = JobProgress(**values)  # type: ignore[arg-type]
        return p.stage_text("en"), p.stage_text("es")

    cases = {
        ("queued", 1): ("Waiting: next in line", "En espera: es el siguiente"),
        ("queued", 3): ("Waiting: number 3 in line", "En espera: número 3 de la fila"),
        ("paused", None): ("Paused for a quicker job; it carries on in a moment", "En pausa por un trabajo más rápido; sigue en un momento"),
        ("finish", None): ("Finishing touches", "Últimos retoques"),
        ("upscale", None): ("Enlarging to full size", "Ampliando al tamaño completo"),
    }
    for (stage, position), expected in cases.items():
        assert words(stage, position=position) == expected
    assert words("frames", step=12, total=48) == ("Painting the frames, 12 of 48", "Pintando los fotogramas: 12 de 48")
    for stage in ("retrying", "preempted", "waiting", "starting", "done", "something new"):
        english, spanish = words(stage)
        assert english and spanish and english != spanish, stage


def test_a_paused_job_has_no_estimate_and_says_why_it_stands_still(services: Services) -> None:
    job_id = _running(services, "artwork.hd", progress=0.4, detail={"stage": "pass 2/3", "pass": 2, "passes": 3, "paused": True})
    job = describe(services, services.queue.get(job_id))  # type: ignore[arg-type]
    assert (job.stage, job.eta_seconds) == ("paused", None)


def test_a_waiting_preview_counts_what_goes_before_it_but_not_an_hd_that_steps_aside(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "FIRST_GUESS_SECONDS", {"artwork.preview": 40.0, "video.stylize": 30.0, "artwork.hd": 600.0})
    _running(services, "artwork.hd", progress=0.5, detail={"eta_seconds": 300})
    video = services.queue.enqueue("video.stylize", priority=lanes.INTERACTIVE)
    preview = services.queue.enqueue("artwork.preview", priority=lanes.INTERACTIVE)
    waiting = describe(services, services.queue.get(preview))  # type: ignore[arg-type]
    # the video before it (30 s) and its own (40 s); the running HD pauses for both
    assert (waiting.stage, waiting.position) == ("queued", 2)
    assert waiting.eta_seconds == pytest.approx(70.0)
    # a paid HD ordered now waits for the running HD's 300 s, the video, the preview, then its 600
    hd = services.queue.enqueue("artwork.hd", priority=lanes.PAID)
    assert estimate_wait(services, services.queue.get(hd)) == pytest.approx(300 + 30 + 40 + 600, abs=5)  # type: ignore[arg-type]


def test_the_estimate_learns_from_the_last_jobs_of_the_kind(services: Services) -> None:
    done = services.queue.enqueue("video.stylize")
    services.queue.claim("w")
    services.queue.complete(done, "w")
    with services.engine.begin() as conn:  # the last one took 12 s
        conn.exec_driver_sql("UPDATE jobs SET started_at = ?, finished_at = ? WHERE id = ?", (
            (datetime.now(UTC) - timedelta(seconds=12)).isoformat(), datetime.now(UTC).isoformat(), done))
    assert progress_module.typical_seconds(services, "video.stylize") == pytest.approx(12.0, abs=0.5)
    assert progress_module.typical_seconds(services, "artwork.hd") == progress_module.FIRST_GUESS_SECONDS["artwork.hd"]


def _job(progress: float) -> JobProgress:
    return JobProgress("k", "running", progress, "pass 1/2", 1, 2, None, None, None, None, 0)


def test_a_commissions_fraction_never_goes_down_from_the_order_to_the_download() -> None:
    timeline = [
        commission_fraction(None, None, preview_done=False, delivered=False),
        *(commission_fraction(_job(f), None, preview_done=False, delivered=False) for f in (0.0, 0.3, 1.0)),
        commission_fraction(_job(1.0), None, preview_done=True, delivered=False),  # ready, unpaid
        *(commission_fraction(_job(1.0), _job(f), preview_done=True, delivered=False) for f in (0.0, 0.5, 1.0)),
        commission_fraction(_job(1.0), _job(1.0), preview_done=True, delivered=True),
    ]
    assert timeline == sorted(timeline)
    assert timeline[4] == PREVIEW_SHARE and timeline[-1] == 1.0


def test_jobs_that_other_workers_run_do_not_go_before_a_waiting_one(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "FIRST_GUESS_SECONDS", {"artwork.preview": 40.0, "mail.send": 500.0})
    services.queue.record_worker("painter", host="h", pid=1, kinds=["artwork.preview", "artwork.hd"])
    services.queue.record_worker("mailer", host="h", pid=2, kinds=["mail.send"])
    services.queue.enqueue("mail.send", priority=lanes.MAIL)
    preview = services.queue.enqueue("artwork.preview", priority=lanes.INTERACTIVE)
    # the mail goes first in the line, but the mail sender sends it: only the preview's own time
    assert estimate_wait(services, services.queue.get(preview)) == pytest.approx(40.0)  # type: ignore[arg-type]


def test_a_clip_in_parts_says_which_part_is_painting() -> None:
    p = JobProgress("video.stylize", "queued", 0.4, "parts", None, None, 2, 3, 30.0, None, 0)
    assert p.stage_text("en") == "Painting the clip, part 2 of 3"
    assert p.stage_text("es") == "Pintando el vídeo: parte 2 de 3"
