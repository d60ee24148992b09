"""The queue contract (DESIGN.md), one suite run on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from atelier.store.db import Artwork, Job, make_engine, transaction
from atelier.store.errors import LeaseLostError
from atelier.store.migrations import upgrade
from atelier.store.queue import Heartbeat, JobQueue, RetryPolicy, enqueue, enqueue_many


def _ids(jobs: list) -> list[int]:  # type: ignore[type-arg]
    return [job.id for job in jobs]


# ------------------------------------------------------------------------------------------------
# enqueue


def test_a_job_is_created_with_the_callers_transaction_or_not_at_all(engine: Engine, queue: JobQueue) -> None:
    with pytest.raises(RuntimeError), transaction(engine) as session:
        artwork = Artwork(owner_email="ana@example.com", locale="es", style="starry")
        session.add(artwork)
        session.flush()
        enqueue(session, "artwork.preview", {"artwork_id": artwork.id})
        raise RuntimeError("the order failed after the job was added")
    assert queue.stats().counts == {}
    with transaction(engine) as session:
        artwork = Artwork(owner_email="ana@example.com", locale="es", style="starry")
        session.add(artwork)
        session.flush()
        job_id = enqueue(session, "artwork.preview", {"artwork_id": artwork.id})
    job = queue.get(job_id)
    assert job is not None
    assert (job.kind, job.payload, job.status, job.attempts) == ("artwork.preview", {"artwork_id": artwork.id}, "queued", 0)
    assert job.created_at.tzinfo is UTC and abs((datetime.now(UTC) - job.created_at).total_seconds()) < 60


def test_enqueue_many_returns_ids_in_order(engine: Engine, queue: JobQueue) -> None:
    with transaction(engine) as session:
        ids = enqueue_many(session, "bulk", [{"n": n} for n in range(5)], output_keys=[f"out/{n}.jpg" for n in range(5)])
    assert [queue.get(i).payload["n"] for i in ids] == list(range(5))  # type: ignore[union-attr]
    assert queue.get(ids[3]).output_key == "out/3.jpg"  # type: ignore[union-attr]


def test_a_job_is_found_by_its_kind_and_output_key(engine: Engine, queue: JobQueue) -> None:
    with transaction(engine) as session:
        video = enqueue(session, "video.stylize", output_key="videos/a.mp4")
        enqueue(session, "batch.stylize", output_key="videos/b.mp4")
    found = queue.find("video.stylize", "videos/a.mp4")
    assert found is not None and found.id == video
    assert queue.find("batch.stylize", "videos/a.mp4") is None  # same key, other kind
    assert queue.find("video.stylize", "videos/none.mp4") is None


def test_enqueue_refuses_nonsense(engine: Engine) -> None:
    with transaction(engine) as session:
        with pytest.raises(ValueError):
            enqueue(session, "x", max_attempts=0)
        with pytest.raises(ValueError):
            enqueue(session, "x", run_at=datetime(2030, 1, 1))  # naive


# ------------------------------------------------------------------------------------------------
# claim


def test_claim_leases_the_job_to_one_worker(queue: JobQueue) -> None:
    job_id = queue.enqueue("render", {"n": 1})
    (job,) = queue.claim("worker-a", lease_seconds=30)
    assert job.id == job_id
    assert (job.status, job.lease_owner, job.attempts) == ("running", "worker-a", 1)
    assert job.lease_expires_at is not None and job.started_at is not None
    lease = (job.lease_expires_at - job.started_at).total_seconds()
    assert lease == pytest.approx(30, abs=0.01)
    assert queue.claim("worker-b") == []


def test_claim_order_is_priority_then_run_at_then_id(queue: JobQueue) -> None:
    now = datetime.now(UTC)
    low_old = queue.enqueue("render", run_at=now - timedelta(minutes=5))
    normal_new = queue.enqueue("render", run_at=now - timedelta(minutes=1))
    normal_old = queue.enqueue("render", run_at=now - timedelta(minutes=2))
    normal_old_twin = queue.enqueue("render", run_at=now - timedelta(minutes=2))
    urgent = queue.enqueue("render", priority=10, run_at=now - timedelta(seconds=1))
    with transaction(queue.engine) as session:
        session.get(Job, low_old).priority = -5  # type: ignore[union-attr]
    order = [queue.claim("w")[0].id for _ in range(5)]
    assert order == [urgent, normal_old, normal_old_twin, normal_new, low_old]


def test_claim_takes_several_at_once_in_claim_order(queue: JobQueue) -> None:
    ids = [queue.enqueue("render", priority=p) for p in (0, 5, 1)]
    claimed = queue.claim("w", limit=2)
    assert _ids(claimed) == [ids[1], ids[2]]
    assert _ids(queue.claim("w", limit=5)) == [ids[0]]


def test_jobs_scheduled_for_later_wait_until_due(queue: JobQueue) -> None:
    later = queue.enqueue("mail", run_at=datetime.now(UTC) + timedelta(seconds=1.5))
    assert queue.claim("w") == []
    assert queue.position(later) == 1
    time.sleep(1.6)
    assert _ids(queue.claim("w")) == [later]


def test_workers_claim_only_the_kinds_they_ask_for(queue: JobQueue) -> None:
    preview = queue.enqueue("artwork.preview")
    video = queue.enqueue("video")
    assert _ids(queue.claim("gpu", kinds=["video"])) == [video]
    assert queue.claim("gpu", kinds=["video", "hd"]) == []
    assert _ids(queue.claim("cpu", kinds=["artwork.preview"])) == [preview]


def test_concurrent_claimers_never_get_the_same_job(queue: JobQueue, engine: Engine) -> None:
    with transaction(engine) as session:
        all_ids = set(enqueue_many(session, "render", [{"n": n} for n in range(120)]))
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def worker(name: str) -> None:
        mine: list[int] = []
        try:
            start.wait()
            while batch := queue.claim(name, limit=random.choice([1, 2, 3])):
                mine += _ids(batch)
                # A worker paints between claims: without a pause one thread can drain the
                # whole queue before the others are scheduled on a busy machine.
                time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        claimed[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    every = [i for mine in claimed.values() for i in mine]
    assert len(every) == len(set(every)) == 120
    assert set(every) == all_ids
    assert sum(1 for mine in claimed.values() if mine) >= 2  # they did run side by side


# ------------------------------------------------------------------------------------------------
# leases and fencing


def test_heartbeat_extends_the_lease_only_for_its_owner(queue: JobQueue) -> None:
    queue.enqueue("render")
    (job,) = queue.claim("w", lease_seconds=5)
    time.sleep(0.05)
    assert queue.heartbeat(job.id, "w", lease_seconds=60)
    renewed = queue.get(job.id)
    assert renewed is not None and renewed.lease_expires_at is not None
    assert renewed.lease_expires_at > job.lease_expires_at + timedelta(seconds=50)  # type: ignore[operator]
    assert not queue.heartbeat(job.id, "intruder")


def test_an_expired_lease_is_reclaimed_and_the_stale_owner_is_fenced_off(queue: JobQueue) -> None:
    job_id = queue.enqueue("render")
    queue.claim("slow", lease_seconds=1)
    assert queue.claim("fast") == []  # not yet
    time.sleep(1.2)
    assert queue.stats().expired_leases == 1
    (again,) = queue.claim("fast", lease_seconds=30)
    assert (again.id, again.lease_owner, again.attempts) == (job_id, "fast", 2)
    # the slow worker wakes up: nothing it says counts any more
    assert not queue.heartbeat(job_id, "slow")
    assert not queue.set_progress(job_id, "slow", 0.9)
    assert not queue.complete(job_id, "slow")
    assert queue.fail(job_id, "slow", "late") is None
    assert not queue.release(job_id, "slow")
    job = queue.get(job_id)
    assert job is not None and (job.status, job.lease_owner, job.progress, job.last_error) == ("running", "fast", 0.0, None)
    assert queue.complete(job_id, "fast", result={"key": "previews/1.jpg"})


def test_complete_records_done_with_its_result(queue: JobQueue) -> None:
    job_id = queue.enqueue("render")
    queue.claim("w")
    assert queue.complete(job_id, "w", result={"seconds": 12.5})
    job = queue.get(job_id)
    assert job is not None
    assert (job.status, job.progress, job.result, job.lease_expires_at) == ("done", 1.0, {"seconds": 12.5}, None)
    assert job.finished_at is not None
    assert not queue.complete(job_id, "w")  # only once
    assert queue.claim("w") == []


def test_a_job_whose_lease_runs_out_on_its_last_attempt_is_dead_not_reclaimed(queue: JobQueue) -> None:
    job_id = queue.enqueue("render", max_attempts=2)
    queue.claim("w1", lease_seconds=0.5)
    time.sleep(0.7)
    queue.claim("w2", lease_seconds=0.5)
    time.sleep(0.7)
    assert queue.claim("w3") == []
    job = queue.get(job_id)
    assert job is not None and (job.status, job.attempts) == ("dead", 2)
    assert "lease expired" in (job.last_error or "")


def test_requeue_expired_settles_stuck_jobs_now(queue: JobQueue) -> None:
    retry = queue.enqueue("render", max_attempts=3)
    last = queue.enqueue("render", max_attempts=1)
    queue.claim("w", limit=2, lease_seconds=0.5)
    time.sleep(0.7)
    assert _ids(queue.expired()) == [retry, last]
    assert queue.requeue_expired() == ([retry], [last])
    assert queue.get(retry).status == "queued"  # type: ignore[union-attr]
    assert queue.get(last).status == "dead"  # type: ignore[union-attr]
    assert queue.expired() == []


# ------------------------------------------------------------------------------------------------
# failures and retries


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(base_seconds=10, factor=2, max_seconds=100, jitter=0.5)
    rng = random.Random(7)
    for attempt, raw in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (9, 100)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert raw * 0.5 <= min(delays) and max(delays) <= raw
        assert max(delays) - min(delays) > raw * 0.3  # jitter spreads them
    assert RetryPolicy(jitter=0).delay(3) == 40


def test_a_failed_attempt_is_retried_after_a_backoff_then_dies(engine: Engine) -> None:
    # Seconds, not tenths: a claim on a busy machine must still come before the backoff ends.
    queue = JobQueue(engine, retry=RetryPolicy(base_seconds=3.0, factor=2, jitter=0.5))
    job_id = queue.enqueue("render", max_attempts=2)
    queue.claim("w")
    before = datetime.now(UTC)
    assert queue.fail(job_id, "w", "CUDA out of memory") == "queued"
    job = queue.get(job_id)
    assert job is not None and (job.status, job.last_error, job.lease_owner) == ("queued", "CUDA out of memory", None)
    wait = (job.run_at - before).total_seconds()
    assert 1.4 <= wait <= 3.1  # 3 s less up to half of it, give or take the clocks
    assert queue.claim("w") == []  # not before the backoff
    time.sleep(wait + 0.2)
    (again,) = queue.claim("w")
    assert again.attempts == 2
    assert queue.fail(job_id, "w", "CUDA out of memory again") == "dead"
    job = queue.get(job_id)
    assert job is not None and job.status == "dead" and job.finished_at is not None
    assert queue.claim("w") == []


def test_a_failure_retrying_cannot_help_is_final(queue: JobQueue) -> None:
    job_id = queue.enqueue("render", max_attempts=5)
    queue.claim("w")
    assert queue.fail(job_id, "w", "the photo cannot be decoded", retry=False) == "failed"
    assert queue.get(job_id).status == "failed"  # type: ignore[union-attr]
    assert queue.claim("w") == []


def test_error_text_is_kept_bounded(queue: JobQueue) -> None:
    job_id = queue.enqueue("render")
    queue.claim("w")
    queue.fail(job_id, "w", "x" * 10_000 + "the end", retry_in=60)
    error = queue.get(job_id).last_error  # type: ignore[union-attr]
    assert error is not None and len(error) <= 4000 and error.endswith("the end")


def test_release_gives_the_job_back_without_counting_the_attempt(queue: JobQueue) -> None:
    job_id = queue.enqueue("render")
    queue.claim("stopping")
    assert queue.release(job_id, "stopping")
    job = queue.get(job_id)
    assert job is not None and (job.status, job.attempts, job.lease_owner) == ("queued", 0, None)
    (again,) = queue.claim("other")
    assert (again.id, again.attempts) == (job_id, 1)


# ------------------------------------------------------------------------------------------------
# cancel, progress, statistics


def test_cancel_stops_queued_and_running_jobs_and_fences_the_worker(queue: JobQueue) -> None:
    waiting = queue.enqueue("render")
    running = queue.enqueue("render", priority=1)
    queue.claim("w")
    assert queue.cancel(waiting) and queue.cancel(running)
    assert queue.claim("w") == []
    assert not queue.heartbeat(running, "w")
    assert not queue.complete(running, "w")
    assert queue.get(running).status == "cancelled"  # type: ignore[union-attr]
    assert not queue.cancel(running)  # already finished


def test_progress_detail_and_preview_key_are_kept_on_the_job(queue: JobQueue) -> None:
    job_id = queue.enqueue("render")
    queue.claim("w")
    assert queue.set_progress(job_id, "w", 0.25, detail={"stage": "pass 1", "step": 50, "loss": 1.5e5}, preview_key="progress/1.jpg")
    assert queue.set_progress(job_id, "w", 1.7)  # clamped; detail and preview kept
    job = queue.get(job_id)
    assert job is not None
    assert (job.progress, job.progress_detail, job.preview_key) == (1.0, {"stage": "pass 1", "step": 50, "loss": 1.5e5}, "progress/1.jpg")
    queue.set_progress(job_id, "w", -1, detail={"stage": "pass 2"})
    job = queue.get(job_id)
    assert job is not None and (job.progress, job.progress_detail) == (1.0, {"stage": "pass 2"})


def test_a_jobs_progress_never_goes_down_not_even_across_a_release_and_a_new_claim(queue: JobQueue) -> None:
    job_id = queue.enqueue("render")
    queue.claim("w")
    assert queue.set_progress(job_id, "w", 0.4, detail={"stage": "pass 2/3"})
    assert queue.set_progress(job_id, "w", 0.1, detail={"stage": "pass 3/3"})  # a pass restarting at 0
    assert queue.get(job_id).progress == 0.4  # type: ignore[union-attr]
    assert queue.release(job_id, "w")
    (again,) = queue.claim("other")
    assert (again.id, again.progress, again.attempts) == (job_id, 0.4, 1)
    assert queue.set_progress(job_id, "other", 0.5)
    assert queue.get(job_id).progress == 0.5  # type: ignore[union-attr]


def test_stats_count_jobs_per_kind_and_status(queue: JobQueue) -> None:
    assert queue.stats().oldest_queued_age is None
    queue.enqueue("render", run_at=datetime.now(UTC) - timedelta(seconds=90))
    queue.enqueue("render")
    queue.enqueue("mail")
    queue.enqueue("mail", run_at=datetime.now(UTC) + timedelta(hours=1))  # not due: not "waiting"
    (job,) = queue.claim("w", kinds=["mail"])
    queue.complete(job.id, "w")
    stats = queue.stats()
    assert stats.counts == {"render": {"queued": 2}, "mail": {"done": 1, "queued": 1}}
    assert stats.by_status()["queued"] == 3 and stats.by_status()["dead"] == 0
    assert stats.oldest_queued_age == pytest.approx(90, abs=10)
    assert stats.expired_leases == 0


def test_position_says_how_many_a_claim_takes_before_a_job_of_any_kind(queue: JobQueue) -> None:
    first, second = queue.enqueue("render"), queue.enqueue("render")
    mail = queue.enqueue("mail")
    vip = queue.enqueue("render", priority=5)
    urgent_mail = queue.enqueue("mail", priority=9)
    assert [queue.position(i) for i in (urgent_mail, vip, first, second, mail)] == [1, 2, 3, 4, 5]
    queue.claim("w", kinds=["render"])
    assert queue.position(vip) is None  # running
    assert [queue.position(i) for i in (urgent_mail, first, second, mail)] == [1, 2, 3, 4]
    assert queue.position(123456) is None


def test_ahead_of_lists_the_running_jobs_and_the_queued_ones_a_claim_takes_first(queue: JobQueue) -> None:
    running = queue.enqueue("hd", priority=200)
    queue.claim("w")
    assert queue.set_progress(running, "w", 0.25, detail={"eta_seconds": 90})
    older = queue.enqueue("preview", priority=300)
    mine = queue.enqueue("video", priority=300)
    queue.enqueue("preview", priority=300)  # after mine: not ahead
    queue.enqueue("hd", priority=200)  # lower: not ahead
    ahead = queue.ahead_of(mine)
    assert [(j.id, j.status) for j in ahead] == [(running, "running"), (older, "queued")]
    assert (ahead[0].kind, ahead[0].progress, ahead[0].progress_detail) == ("hd", 0.25, {"eta_seconds": 90})
    assert queue.ahead_of(running) == []  # not queued


def test_waiting_above_and_a_claim_above_a_priority_see_only_higher_priorities(queue: JobQueue) -> None:
    hd = queue.enqueue("hd", priority=200)
    queue.claim("w")
    assert not queue.waiting_above(200)
    queue.enqueue("hd", priority=200)  # the same priority does not go before a running job
    assert not queue.waiting_above(200)
    assert queue.claim("w", above=200) == []
    later = queue.enqueue("preview", priority=300, run_at=datetime.now(UTC) + timedelta(hours=1))
    assert not queue.waiting_above(200)  # not due
    preview = queue.enqueue("preview", priority=300)
    assert queue.waiting_above(200) and queue.waiting_above(200, kinds=["preview"])
    assert not queue.waiting_above(200, kinds=["video"]) and not queue.waiting_above(300)
    (claimed,) = queue.claim("w", above=200)
    assert claimed.id == preview and later != preview and hd != preview
    assert not queue.waiting_above(200)


def test_recent_seconds_are_how_long_the_last_done_jobs_of_a_kind_ran(queue: JobQueue) -> None:
    assert queue.recent_seconds("render") == []
    job_id = queue.enqueue("render")
    queue.claim("w")
    time.sleep(0.3)
    queue.complete(job_id, "w")
    queue.enqueue("mail")
    (seconds,) = queue.recent_seconds("render")
    assert 0.25 <= seconds < 10


def test_purge_removes_old_finished_jobs_only(queue: JobQueue) -> None:
    done = queue.enqueue("render")
    waiting = queue.enqueue("render", run_at=datetime.now(UTC) + timedelta(hours=1))
    queue.claim("w")
    queue.complete(done, "w")
    assert queue.purge_finished(timedelta(hours=1)) == 0
    time.sleep(0.05)
    assert queue.purge_finished(timedelta(0)) == 1
    assert queue.get(done) is None and queue.get(waiting) is not None


def test_workers_report_themselves_for_the_admin_view(queue: JobQueue) -> None:
    queue.record_worker("host-a:12", host="host-a", pid=12, kinds=["render"])
    queue.record_worker("host-a:12", host="host-a", pid=12, kinds=["render"], current_job_id=7)
    queue.record_worker("host-b:3", host="host-b", pid=3)
    workers = {w.id: w for w in queue.workers(seen_within=timedelta(minutes=1))}
    assert set(workers) == {"host-a:12", "host-b:3"}
    assert (workers["host-a:12"].current_job_id, workers["host-a:12"].kinds) == (7, ["render"])
    assert workers["host-b:3"].kinds is None
    queue.forget_worker("host-b:3")
    assert [w.id for w in queue.workers()] == ["host-a:12"]


# ------------------------------------------------------------------------------------------------
# waking up


def test_a_waiting_worker_wakes_when_a_job_is_enqueued(engine: Engine, queue: JobQueue) -> None:
    assert queue.wait_for_jobs(0.2) in (True, False)  # PostgreSQL: sets up LISTEN
    start = time.monotonic()
    assert queue.wait_for_jobs(0.3) is False
    assert time.monotonic() - start >= 0.25
    woke: list[float] = []

    def wait() -> None:
        began = time.monotonic()
        if queue.wait_for_jobs(10):
            woke.append(time.monotonic() - began)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    # enqueued by another "process": a different queue object and its own transaction
    other = JobQueue(engine)
    other.enqueue("render")
    thread.join(timeout=15)
    assert woke, "wait_for_jobs returned False: it did not see the job within its 10 s"


def test_a_waiting_worker_on_sqlite_wakes_at_once_for_an_enqueue_in_its_own_process(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
    upgrade(engine)
    queue = JobQueue(engine, poll_interval=30)  # polling alone would take 30 s
    woke: list[float] = []

    def wait() -> None:
        began = time.monotonic()
        if queue.wait_for_jobs(20):
            woke.append(time.monotonic() - began)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    with transaction(engine) as session:
        enqueue(session, "render")
    thread.join(timeout=25)
    engine.dispose()
    # Polling would have looked only after 30 s, past the wait's 20: True means it was woken.
    assert woke, "the enqueue did not wake the waiting worker"


# ------------------------------------------------------------------------------------------------
# the heartbeat thread


def test_the_heartbeat_thread_keeps_a_long_job_leased(engine: Engine) -> None:
    queue = JobQueue(engine, lease_seconds=1)
    job_id = queue.enqueue("render")
    queue.claim("painter")
    with Heartbeat(queue, job_id, "painter") as beat:
        time.sleep(2.5)  # 2.5 leases of "rendering"
        assert queue.claim("thief") == []
        beat.check()
    assert beat.beats >= 4
    assert queue.complete(job_id, "painter")


def test_the_heartbeat_notices_a_lost_lease(engine: Engine) -> None:
    queue = JobQueue(engine, lease_seconds=30)
    job_id = queue.enqueue("render")
    queue.claim("painter")
    lost = threading.Event()
    beat = Heartbeat(queue, job_id, "painter", interval=0.1, on_lost=lost.set).start()
    queue.cancel(job_id)
    assert lost.wait(5)
    assert beat.lost.is_set()
    with pytest.raises(LeaseLostError):
        beat.check()
    beat.stop()


def test_stopping_the_heartbeat_does_not_wait_a_whole_interval(engine: Engine) -> None:
    queue = JobQueue(engine, lease_seconds=600)
    job_id = queue.enqueue("render")
    queue.claim("painter")
    beat = Heartbeat(queue, job_id, "painter").start()  # beats every 200 s
    start = time.monotonic()
    beat.stop()
    assert time.monotonic() - start < 100  # half an interval: stop() interrupts the wait


def test_timestamps_come_back_aware_and_in_utc(engine: Engine, queue: JobQueue) -> None:
    job_id = queue.enqueue("render", run_at=datetime(2020, 5, 1, 14, 0, tzinfo=UTC) + timedelta(microseconds=1))
    with transaction(engine, read_only=True) as session:
        run_at = session.scalar(select(Job.run_at).where(Job.id == job_id))
    assert run_at == datetime(2020, 5, 1, 14, 0, 0, 1, tzinfo=UTC)
    assert run_at.tzinfo is UTC


def test_kind_and_priority_are_read_as_they_stand_now(queue: JobQueue) -> None:
    job_id = queue.enqueue("hd_ahead", priority=100)
    queue.claim("w")
    assert queue.kind_and_priority(job_id) == ("hd_ahead", 100)
    assert queue.set_priority(job_id, 200)
    assert queue.kind_and_priority(job_id) == ("hd_ahead", 200)
    assert queue.kind_and_priority(987654) is None
