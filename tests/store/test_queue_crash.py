"""Crash safety with real processes: workers drain a queue while one of them is SIGKILLed.

Every job must end ``done`` exactly once; the killed worker's job must come back after its lease
(not before: its heartbeat kept it alive while it lived) and be finished by another worker; and
the dead worker's late word on it must be refused.
"""

from __future__ import annotations

import os
import queue as queue_module
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from atelier.store.db import transaction
from atelier.store.queue import JobQueue, enqueue_many

WORKER = Path(__file__).with_name("queue_worker.py")
JOBS = 500
LEASE = 2.0

pytestmark = pytest.mark.slow


class Worker:
    """A worker process and the lines it prints, read on a thread."""

    def __init__(self, url: str, worker_id: str, *, hang_on: int = 0) -> None:
        self.id = worker_id
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), url, worker_id, "--lease", str(LEASE), "--hang-on", str(hang_on)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue_module.Queue[str] = queue_module.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue_module.Empty:
                break
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"{self.id} did not say {prefix!r} in {timeout} s; said {self.seen}; stderr: {self.stderr()}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read()[-3000:]


def test_workers_drain_the_queue_exactly_once_when_one_is_killed_mid_job(engine: Engine, backend: str) -> None:
    # PostgreSQL: 4 processes; SQLite (one writer at a time): 2.
    count = {"postgresql": 4, "sqlite": 2}[backend]
    with engine.begin() as conn:
        for table in ("crash_starts", "crash_completions"):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
            conn.exec_driver_sql(f"CREATE TABLE {table} (job_id INTEGER NOT NULL, worker VARCHAR(50) NOT NULL)")
    with transaction(engine) as session:
        all_ids = set(enqueue_many(session, "crash.test", [{"n": n} for n in range(JOBS)]))
    url = engine.url.render_as_string(hide_password=False)

    procs = [Worker(url, "victim", hang_on=5)] + [Worker(url, f"w{i}") for i in range(1, count)]
    try:
        for proc in procs:
            proc.expect("READY", timeout=60)
        for proc in procs:
            proc.go()
        victim = procs[0]
        hung_job = int(victim.expect("HANG", timeout=60).split()[1])

        # While it lives, its heartbeat keeps the job: wait 1.5 leases, it must still be its own.
        queue = JobQueue(engine, lease_seconds=LEASE)
        time.sleep(1.5 * LEASE)
        job = queue.get(hung_job)
        assert job is not None and (job.status, job.lease_owner, job.attempts) == ("running", "victim", 1)

        lease_end_before_kill = job.lease_expires_at
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)

        for proc in procs[1:]:
            proc.expect("DONE", timeout=300)  # a deadline against hanging, not a speed claim
            assert proc.proc.wait(timeout=30) == 0, proc.stderr()
    finally:
        for proc in procs:
            if proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait()

    with engine.connect() as conn:
        statuses = Counter(s for (s,) in conn.execute(text("SELECT status FROM jobs")))
        completions = conn.execute(text("SELECT job_id, worker FROM crash_completions")).all()
        starts = Counter(j for (j,) in conn.execute(text("SELECT job_id FROM crash_starts")))

    # every job done, each completed exactly once, none lost
    assert statuses == {"done": JOBS}
    completed = Counter(job_id for job_id, _ in completions)
    assert set(completed) == all_ids
    assert max(completed.values()) == 1
    assert len(completions) == JOBS
    # the victim's job: started twice (at-least-once), finished by someone else after the lease
    assert starts[hung_job] == 2
    assert sum(1 for n in starts.values() if n > 1) == 1  # no other job ran twice
    job = queue.get(hung_job)
    assert job is not None
    assert job.status == "done" and job.attempts == 2 and job.lease_owner != "victim"
    assert job.started_at is not None and lease_end_before_kill is not None
    assert job.started_at > lease_end_before_kill  # reclaimed only once the lease had run out
    # its late word is refused
    assert not queue.complete(hung_job, "victim")
    assert queue.fail(hung_job, "victim", "back from the dead") is None
    assert not queue.heartbeat(hung_job, "victim")
    assert queue.get(hung_job).status == "done"  # type: ignore[union-attr]
    # the survivors all took part
    assert {w for _, w in completions} >= {p.id for p in procs[1:]}
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE crash_starts")
        conn.exec_driver_sql("DROP TABLE crash_completions")
