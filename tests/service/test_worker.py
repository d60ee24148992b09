"""The worker loop: run, progress and previews, retries and permanent failures, stopping
(release), a lost lease, presence for the admin view."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from atelier.art.blocks.images import ImageError
from atelier.art.progress import Progress
from atelier.service.context import Services
from atelier.service import lanes, worker as worker_module
from atelier.service.worker import JobContext, PermanentJobError, Preempted, Worker, is_permanent
from atelier.store.db import JobStatus

from tests.service.service_fixtures import make_settings


@pytest.fixture
def services(tmp_path: Path, models_dir: Path) -> Iterator[Services]:
    services = Services.open(make_settings(tmp_path, models_dir))
    yield services
    services.close()


def _worker(services: Services, handler, kind: str = "test.job") -> Worker:  # type: ignore[no-untyped-def]
    return Worker(services, handlers={kind: handler}, worker_id="test-worker", idle_wait=0.1)


def test_a_job_runs_and_its_result_is_recorded(services: Services) -> None:
    job_id = services.queue.enqueue("test.job", {"n": 21})
    worker = _worker(services, lambda ctx: {"double": ctx.payload["n"] * 2})
    assert worker.run_once() == "done"
    job = services.queue.get(job_id)
    assert job is not None and job.status == JobStatus.DONE and job.result == {"double": 42}
    assert worker.run_once() is None  # nothing left


def test_progress_and_an_intermediate_picture_are_recorded(services: Services) -> None:
    job_id = services.queue.enqueue("test.job")
    seen: dict[str, object] = {}

    def handler(ctx: JobContext) -> None:
        report = ctx.progress_callback(start=0.0, end=0.5)
        report(Progress("pass 1/2", 1, 2, loss=12.5, preview=Image.new("RGB", (32, 24), (200, 30, 30))))
        job = services.queue.get(job_id)
        assert job is not None
        seen["progress"], seen["detail"], seen["key"] = job.progress, job.progress_detail, job.preview_key

    assert _worker(services, handler).run_once() == "done"
    assert seen["progress"] == pytest.approx(0.25)
    assert seen["detail"] == {"stage": "pass 1/2", "step": 1, "total": 2, "loss": 12.5, "previews": 1, "eta_seconds": None}
    key = seen["key"]
    assert isinstance(key, str) and services.blobs.read(key)[:3] == b"\xff\xd8\xff"


def test_a_failure_is_retried_later_and_a_permanent_one_is_not(services: Services) -> None:
    flaky = services.queue.enqueue("test.job", {"kind": "flaky"})

    def handler(ctx: JobContext) -> None:
        if ctx.payload["kind"] == "flaky":
            raise RuntimeError("the disk hiccupped")
        raise PermanentJobError("the photo is gone")

    worker = _worker(services, handler)
    assert worker.run_once() == "retry"
    job = services.queue.get(flaky)
    assert job is not None and job.status == JobStatus.QUEUED and "hiccupped" in (job.last_error or "")
    assert job.run_at.timestamp() > time.time()  # backing off
    hopeless = services.queue.enqueue("test.job", {"kind": "hopeless"})
    assert worker.run_once() == "failed"
    job = services.queue.get(hopeless)
    assert job is not None and job.status == JobStatus.FAILED


def test_the_last_failed_attempt_makes_the_job_dead_and_the_handler_knows(services: Services) -> None:
    job_id = services.queue.enqueue("test.job", max_attempts=1)
    told: list[bool] = []

    def handler(ctx: JobContext) -> None:
        error = RuntimeError("boom")
        told.append(ctx.is_final_failure(error))
        raise error

    assert _worker(services, handler).run_once() == "dead"
    assert told == [True]
    job = services.queue.get(job_id)
    assert job is not None and job.status == JobStatus.DEAD


def test_refusals_of_the_art_layer_are_permanent_but_missing_weights_are_not() -> None:
    from atelier.art.errors import ModelMissingError

    assert is_permanent(ImageError("cannot read the photo"))
    assert is_permanent(PermanentJobError("x"))
    assert not is_permanent(ModelMissingError("weights missing"))
    assert not is_permanent(RuntimeError("x"))


def test_stopping_releases_the_job_without_counting_the_attempt(services: Services) -> None:
    job_id = services.queue.enqueue("test.job")
    stop = threading.Event()

    def handler(ctx: JobContext) -> None:
        for step in range(1000):
            if step == 3:
                stop.set()  # SIGTERM arrives while painting
            ctx.progress(step / 1000, force=True)

    assert _worker(services, handler).run_job(services.queue.claim("test-worker")[0], stop) == "released"
    job = services.queue.get(job_id)
    assert job is not None and job.status == JobStatus.QUEUED and job.lease_owner is None
    assert job.attempts == 0


def test_a_cancelled_job_is_dropped_at_its_next_progress_report(services: Services) -> None:
    job_id = services.queue.enqueue("test.job")
    steps: list[int] = []

    def handler(ctx: JobContext) -> None:
        for step in range(100):
            if step == 2:
                services.queue.cancel(job_id)  # the operator cancels it in /admin
            ctx.progress(step / 100, force=True)
            steps.append(step)

    assert _worker(services, handler).run_once() == "lost"
    assert steps == [0, 1]
    job = services.queue.get(job_id)
    assert job is not None and job.status == JobStatus.CANCELLED


def test_a_running_loop_works_through_the_queue_and_forgets_itself_when_stopped(services: Services) -> None:
    ids = [services.queue.enqueue("test.job", {"i": i}) for i in range(3)]
    worker = _worker(services, lambda ctx: {"i": ctx.payload["i"]})
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(services.queue.get(i).status == JobStatus.DONE for i in ids):  # type: ignore[union-attr]
                break
            time.sleep(0.05)
        assert [w.id for w in services.queue.workers()] == ["test-worker"]
        # A job enqueued while it waits is picked up without a restart.
        late = services.queue.enqueue("test.job", {"i": 9})
        deadline = time.monotonic() + 20
        while services.queue.get(late).status != JobStatus.DONE and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert all(services.queue.get(i).status == JobStatus.DONE for i in [*ids, late])  # type: ignore[union-attr]
    assert services.queue.workers() == []


def test_a_worker_refuses_kinds_it_has_no_handler_for(services: Services) -> None:
    with pytest.raises(ValueError, match="no handler"):
        Worker(services, handlers={}, kinds=["artwork.preview"])


def test_the_job_duration_is_measured(services: Services) -> None:
    services.queue.enqueue("test.job")
    _worker(services, lambda ctx: None).run_once()
    text = services.metrics.exposition().decode()
    assert 'atelier_job_seconds_count{kind="test.job",outcome="done"} 1.0' in text


def test_a_loop_that_cannot_reach_the_queue_backs_off_and_resumes_when_it_answers(
    services: Services, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy.exc import OperationalError

    from atelier.service.worker import OUTAGE_BACKOFF_MAX, outage_backoff

    assert [outage_backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert outage_backoff(50) == OUTAGE_BACKOFF_MAX
    job_id = services.queue.enqueue("test.job")
    real_claim = services.queue.claim
    tries: list[float] = []

    def claim(*args, **kwargs):  # type: ignore[no-untyped-def]
        tries.append(time.monotonic())
        if len(tries) <= 3:  # the database is away for three tries
            raise OperationalError("SELECT", {}, Exception("connection refused"))
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(services.queue, "claim", claim)
    worker = _worker(services, lambda ctx: {"ok": True})
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    with caplog.at_level("WARNING", logger="atelier.service.worker"):
        thread.start()
        deadline = time.monotonic() + 20
        while (job := services.queue.get(job_id)) is not None and job.status != JobStatus.DONE:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stop.set()
        thread.join(10)
    gaps = [b - a for a, b in zip(tries, tries[1:4])]
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95 and gaps[2] >= 1.95  # 0.5 s, 1 s, 2 s
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot reach the queue" in m for m in messages) == 3
    assert any("answers again after 3 failed tries" in m for m in messages)


def test_a_busy_worker_keeps_saying_it_is_alive_while_its_job_runs(tmp_path: Path, models_dir: Path) -> None:
    # A lease of 1 s beats every third of a second: the worker's presence follows the beats, so the admin
    # view never calls the only worker stale halfway through a long painting.
    services = Services.open(make_settings(tmp_path, models_dir, lease_seconds=1))
    try:
        services.queue.enqueue("test.job")
        seen: list[object] = []

        def handler(ctx: JobContext) -> None:
            seen.append(services.queue.workers()[0].last_seen_at)
            time.sleep(1.5)
            seen.append(services.queue.workers()[0].last_seen_at)

        worker = Worker(services, handlers={"test.job": handler}, worker_id="painter", presence_interval=0.1)
        assert worker.run_once() == "done"
        first, later = seen
        assert later > first  # type: ignore[operator]
    finally:
        services.close()


# ------------------------------------------------------------------------------------------------
# lanes: a long job steps aside for waiting work of a higher priority (issue 14, item 2)


@pytest.fixture
def lanes_for_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(lanes.LANES, "test.quick", lanes.Lane(lanes.INTERACTIVE))
    monkeypatch.setitem(lanes.LANES, "test.long", lanes.Lane(lanes.PAID, "pause"))
    monkeypatch.setitem(lanes.LANES, "test.ahead", lanes.Lane(lanes.SPECULATIVE, "release"))
    monkeypatch.setattr(worker_module, "YIELD_CHECK_INTERVAL", 0.0)


def _lanes_worker(services: Services, events: list[str], *, long_steps: int = 5) -> Worker:
    def quick(ctx: JobContext) -> dict[str, int]:
        events.append(f"quick {ctx.payload['n']}")
        return {"n": ctx.payload["n"]}

    def long(ctx: JobContext) -> None:
        for step in range(long_steps):
            events.append(f"{ctx.job.kind} {step}")
            if step == 1 and ctx.payload.get("order_quick"):
                services.queue.enqueue("test.quick", {"n": 1}, priority=lanes.priority_of("test.quick"))
            ctx.progress(step / long_steps, stage="pass 1/1")

    handlers = {"test.quick": quick, "test.long": long, "test.ahead": long}
    return Worker(services, handlers=handlers, worker_id="test-worker", idle_wait=0.1)


def test_a_paused_long_job_lets_a_waiting_interactive_one_run_in_between_and_carries_on(
    services: Services, lanes_for_tests: None
) -> None:
    events: list[str] = []
    seen_while_paused: list[dict] = []  # type: ignore[type-arg]
    long_id = services.queue.enqueue("test.long", {"order_quick": True}, priority=lanes.PAID)
    worker = _lanes_worker(services, events)
    quick = worker.handlers["test.quick"]

    def quick_looking_at_the_long_one(ctx: JobContext) -> dict[str, int]:
        seen_while_paused.append(services.queue.get(long_id).progress_detail or {})  # type: ignore[union-attr]
        assert worker.current_job == ctx.job.id
        return quick(ctx)  # type: ignore[return-value]

    worker.handlers["test.quick"] = quick_looking_at_the_long_one
    assert worker.run_once() == "done"
    assert events == ["test.long 0", "test.long 1", "quick 1", "test.long 2", "test.long 3", "test.long 4"]
    long_job = services.queue.get(long_id)
    assert long_job is not None and (long_job.status, long_job.attempts) == ("done", 1)
    assert "paused" not in (long_job.progress_detail or {})
    assert seen_while_paused[0]["paused"] is True and seen_while_paused[0]["stage"] == "pass 1/1"
    assert [j.status for j in services.queue.list_jobs(kinds=["test.quick"])] == ["done"]
    assert worker.current_job is None


def test_a_job_of_the_same_or_a_lower_priority_waits_for_the_long_one(services: Services, lanes_for_tests: None) -> None:
    events: list[str] = []
    services.queue.enqueue("test.long", priority=lanes.PAID)
    worker = _lanes_worker(services, events, long_steps=3)

    def long_that_orders_more(ctx: JobContext) -> None:
        services.queue.enqueue("test.long", priority=lanes.PAID)
        services.queue.enqueue("test.ahead", priority=lanes.SPECULATIVE)
        for step in range(3):
            events.append(f"long {step}")
            ctx.progress(step / 3)

    worker.handlers["test.long"] = long_that_orders_more
    assert worker.run_once() == "done"
    assert events == ["long 0", "long 1", "long 2"]


def test_a_speculative_job_is_released_for_waiting_work_and_resumes_after_it(services: Services, lanes_for_tests: None) -> None:
    events: list[str] = []
    ahead = services.queue.enqueue("test.ahead", priority=lanes.SPECULATIVE)
    worker = _lanes_worker(services, events)

    def ahead_handler(ctx: JobContext) -> dict[str, int]:
        start = 2 if ctx.preemptions else 0  # where its checkpoint would let it start again
        for step in range(start, 5):
            events.append(f"ahead {step}")
            if step == 1:
                services.queue.enqueue("test.quick", {"n": 7}, priority=lanes.INTERACTIVE)
            ctx.progress(0.2 * (step + 1), stage="pass 1/1")
        return {"preemptions": ctx.preemptions}

    worker.handlers["test.ahead"] = ahead_handler
    assert worker.run_once() == "preempted"
    job = services.queue.get(ahead)
    assert job is not None and (job.status, job.attempts, job.lease_owner) == ("queued", 0, None)
    assert job.progress == pytest.approx(0.2)  # kept: the bar does not go back
    assert (job.progress_detail or {})["stage"] == "preempted" and (job.progress_detail or {})["preemptions"] == 1
    assert worker.run_once() == "done"  # the waiting interactive job first
    assert worker.run_once() == "done"  # then the speculative one, again
    assert events == ["ahead 0", "ahead 1", "quick 7", "ahead 2", "ahead 3", "ahead 4"]
    done = services.queue.get(ahead)
    assert done is not None and done.result == {"preemptions": 1} and done.attempts == 1


def test_should_yield_is_what_a_handler_asks_before_it_saves_a_checkpoint(services: Services, lanes_for_tests: None) -> None:
    services.queue.enqueue("test.ahead", priority=lanes.SPECULATIVE)
    answers: list[bool] = []

    def handler(ctx: JobContext) -> None:
        answers.append(ctx.should_yield())
        services.queue.enqueue("test.quick", {"n": 1}, priority=lanes.INTERACTIVE)
        answers.append(ctx.should_yield())
        try:
            ctx.yield_point()
        except Preempted:
            answers.append(True)
            raise

    worker = _lanes_worker(services, [])
    worker.handlers["test.ahead"] = handler
    assert worker.run_once() == "preempted"
    assert answers == [False, True, True]


def test_progress_reports_carry_an_estimate_of_the_seconds_left(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock[0])
    job_id = services.queue.enqueue("test.job")
    details: list[dict] = []  # type: ignore[type-arg]

    def handler(ctx: JobContext) -> None:
        for step in range(5):
            ctx.progress(step / 4, force=True)
            details.append(services.queue.get(job_id).progress_detail or {})  # type: ignore[union-attr]
            clock[0] += 10.0  # each quarter takes ten seconds

    assert _worker(services, handler).run_once() == "done"
    etas = [d["eta_seconds"] for d in details]
    assert etas[0] is None  # nothing measured, no history of the kind
    assert etas[1:] == [pytest.approx(30), pytest.approx(20), pytest.approx(10), pytest.approx(0)]


def test_a_job_that_keeps_failing_logs_its_traceback_once(services: Services, caplog: pytest.LogCaptureFixture) -> None:
    job_id = services.queue.enqueue("test.job", max_attempts=3)

    def handler(ctx: JobContext) -> None:
        raise RuntimeError("the SMTP server is away")

    worker = Worker(services, handlers={"test.job": handler}, worker_id="test-worker", retry=None)
    with caplog.at_level("WARNING", logger="atelier.service.worker"):
        for _ in range(2):
            assert worker.run_once() == "retry"
            with services.engine.begin() as conn:  # due again now
                conn.exec_driver_sql("UPDATE jobs SET run_at = '2000-01-01 00:00:00.000000' WHERE id = ?", (job_id,))
    failures = [r for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert [bool(r.exc_info) for r in failures] == [True, False]
    assert "the SMTP server is away" in failures[1].getMessage()


def test_memory_is_handed_back_after_each_job_but_not_in_a_pause(
    services: Services, lanes_for_tests: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    released: list[int | None] = []
    worker = _lanes_worker(services, [])
    monkeypatch.setattr(worker_module, "release_memory", lambda: released.append(worker.current_job) or True)
    services.queue.enqueue("test.long", {"order_quick": True}, priority=lanes.PAID)
    assert worker.run_once() == "done"
    assert released == [None]  # once, after the long job (not after the quick one in its pause)


def test_a_speculative_job_promoted_while_it_runs_pauses_like_the_paid_one_it_became(
    services: Services, lanes_for_tests: None
) -> None:
    events: list[str] = []
    ahead = services.queue.enqueue("test.ahead", priority=lanes.SPECULATIVE)
    worker = _lanes_worker(services, events)

    def ahead_handler(ctx: JobContext) -> None:
        for step in range(4):
            events.append(f"{ctx.job.kind} {step}")
            if step == 1:
                with services.engine.begin() as conn:  # the buyer pays: it is the paid HD now
                    conn.exec_driver_sql("UPDATE jobs SET kind = 'test.long', priority = ? WHERE id = ?", (lanes.PAID, ahead))
                services.queue.enqueue("test.quick", {"n": 3}, priority=lanes.INTERACTIVE)
            ctx.progress(0.25 * (step + 1))

    worker.handlers["test.ahead"] = ahead_handler
    assert worker.run_once() == "done"  # paused for the quick one, not released
    assert events == ["test.ahead 0", "test.ahead 1", "quick 3", "test.long 2", "test.long 3"]
