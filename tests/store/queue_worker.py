"""A minimal queue worker run as a real process by test_queue_crash.py.

    python queue_worker.py DATABASE_URL WORKER_ID [--lease S] [--work-ms MS] [--hang-on N]

It prints READY once connected and waits for a line on stdin before it starts, so that every
worker begins together. Then: claim one job, keep its lease alive with the Heartbeat thread,
"work" a few milliseconds, complete it, and record the completion in crash_completions (and the
start in crash_starts) — until no job is queued or running. With --hang-on N it prints
"HANG <job id>" on its N-th job and works on it forever (the test kills it there).
"""

from __future__ import annotations

import argparse
import sys
import time

from sqlalchemy import text

from atelier.store.db import make_engine
from atelier.store.queue import Heartbeat, JobQueue


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("worker_id")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--work-ms", type=float, default=3.0)
    parser.add_argument("--hang-on", type=int, default=0)
    args = parser.parse_args()

    engine = make_engine(args.url)
    queue = JobQueue(engine, lease_seconds=args.lease, poll_interval=0.1)
    queue.has_runnable()  # connect now, not on the clock
    print("READY", flush=True)
    sys.stdin.readline()

    claimed = 0
    while True:
        jobs = queue.claim(args.worker_id)
        if not jobs:
            with engine.connect() as conn:
                unfinished = conn.execute(
                    text("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
                ).scalar_one()
            if unfinished == 0:
                break
            queue.wait_for_jobs(0.2)
            continue
        job = jobs[0]
        claimed += 1
        with Heartbeat(queue, job.id, args.worker_id):
            with engine.begin() as conn:
                conn.execute(
                    text("INSERT INTO crash_starts (job_id, worker) VALUES (:j, :w)"),
                    {"j": job.id, "w": args.worker_id},
                )
            if claimed == args.hang_on:
                print(f"HANG {job.id}", flush=True)
                while True:
                    time.sleep(1)
            time.sleep(args.work_ms / 1000)
        if queue.complete(job.id, args.worker_id):
            with engine.begin() as conn:
                conn.execute(
                    text("INSERT INTO crash_completions (job_id, worker) VALUES (:j, :w)"),
                    {"j": job.id, "w": args.worker_id},
                )
        else:
            print(f"REFUSED {job.id}", flush=True)
    queue.close()
    engine.dispose()
    print(f"DONE {claimed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
