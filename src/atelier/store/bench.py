"""How fast the queue hands out work: claims per second with 1, 4, 8 worker processes.

Each worker is a process of its own (threads would measure the GIL, not the database) that claims
one job, completes it at once and claims the next, until the queue is empty. The clock starts when
every worker is connected and ready (a barrier) and stops when the last one finds the queue empty,
so process start-up is not counted. A claim here is the full cycle a real worker pays per job:
claim + complete, two write transactions.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete

from atelier.store.db import Job, make_engine, transaction
from atelier.store.queue import JobQueue, enqueue_many

log = logging.getLogger(__name__)

BENCH_KIND = "bench.noop"


@dataclass(frozen=True)
class QueueBenchResult:
    """One round: ``jobs`` drained by ``workers`` processes in ``seconds``."""

    backend: str
    workers: int
    jobs: int
    seconds: float

    @property
    def claims_per_second(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else float("inf")


def bench_queue(
    url: str,
    *,
    worker_counts: Sequence[int] = (1, 4, 8),
    jobs: int = 2000,
    timeout: float = 300.0,
) -> list[QueueBenchResult]:
    """Drain ``jobs`` no-op jobs with each number of workers in turn on the (migrated) database at
    ``url``; one result per round. Only jobs of kind ``bench.noop`` are created and removed, but
    run it on a scratch database: the rounds compete with any real work there."""
    engine = make_engine(url)
    backend = engine.dialect.name
    results = []
    try:
        for count in worker_counts:
            _reset(engine)
            with transaction(engine) as session:
                enqueue_many(session, BENCH_KIND, ({"n": i} for i in range(jobs)))
            seconds, done = _round(url, count, timeout)
            if done != jobs:
                raise RuntimeError(f"{count} workers completed {done} of {jobs} jobs")
            result = QueueBenchResult(backend, count, jobs, seconds)
            log.info("%s, %d workers: %.0f claims/s", backend, count, result.claims_per_second)
            results.append(result)
    finally:
        _reset(engine)
        engine.dispose()
    return results


def _reset(engine: Any) -> None:
    with transaction(engine) as session:
        session.execute(delete(Job).where(Job.kind == BENCH_KIND))


def _round(url: str, count: int, timeout: float) -> tuple[float, int]:
    # spawn, not fork: a forked child would inherit the parent's pooled connections.
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(count + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, f"bench-{i}", barrier, results), daemon=True)
        for i in range(count)
    ]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(timeout=timeout)
        start = time.monotonic()
        done, end = 0, start
        for _ in procs:
            n, finished = results.get(timeout=timeout)
            done += n
            end = max(end, finished)
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    return end - start, done


def _worker(url: str, worker_id: str, barrier: Any, results: Any) -> None:
    engine = make_engine(url)
    queue = JobQueue(engine, lease_seconds=60)
    queue.has_runnable([BENCH_KIND])  # connect before the clock starts
    barrier.wait()
    done = 0
    while True:
        claimed = queue.claim(worker_id, kinds=[BENCH_KIND])
        if not claimed:
            break
        for job in claimed:
            if queue.complete(job.id, worker_id):
                done += 1
    results.put((done, time.monotonic()))
    engine.dispose()
