"""A worker SIGKILLed mid-painting: `atelier worker` processes on PostgreSQL, an S3 API server
and a real SMTP server. The first worker is killed once the painting has written progress (no
handler runs, nothing is handed back); its lease runs out, a second worker claims the job again
and the artwork completes -- one preview in the store, one mail to its owner."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import boto3
import pytest
from sqlalchemy import select

from atelier.config import Settings
from atelier.service.artworks import get_artwork, order_artwork
from atelier.service.context import Services
from atelier.store.db import Artwork, Job, JobStatus, OutboxEmail, transaction
from atelier.store.scratch import scratch_database

from tests.faults.fault_fixtures import Process, base_env, wait_until
from tests.store.s3_server import PolicyEnforcingMotoServer
from tests.service.service_fixtures import add_catalog_style, free_port, small_jpeg, smtp_server
from tests.web.web_fixtures import postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

KEY_ID, SECRET = "fault-key", "fault-secret"
LEASE_SECONDS = 4


def test_a_worker_killed_mid_painting_leaves_a_job_another_worker_completes_once(
    tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path
) -> None:
    server_url = postgres_server()  # fails (or skips) before anything is started
    s3 = PolicyEnforcingMotoServer(ip_address="127.0.0.1", port=free_port(), secret_access_key=SECRET)
    s3.start()
    endpoint = "http://{}:{}".format(*s3.get_host_and_port())
    bucket = f"atelier-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET).create_bucket(Bucket=bucket)
    inbox, smtp, smtp_port = smtp_server()
    workers: list[Process] = []
    with scratch_database(server_url, prefix="atelier_fault") as database_url:
        env = base_env(
            models_dir,
            ATELIER_STYLES_DIR=str(tmp_path / "styles"),
            ATELIER_DATABASE_URL=database_url,
            ATELIER_STORAGE_URL=f"s3://{bucket}/site",
            ATELIER_S3_ENDPOINT_URL=endpoint,
            ATELIER_S3_REGION="us-east-1",
            ATELIER_S3_ACCESS_KEY_ID=KEY_ID,
            ATELIER_S3_SECRET_ACCESS_KEY=SECRET,
            ATELIER_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
            ATELIER_PUBLIC_URL="http://atelier.test",
            ATELIER_LEASE_SECONDS=str(LEASE_SECONDS),
        )
        settings = Settings(
            data_dir=tmp_path / "client",
            models_dir=models_dir,
            styles_dir=tmp_path / "styles",
            database_url=database_url,
            storage_url=f"s3://{bucket}/site",
            s3_endpoint_url=endpoint,
            s3_region="us-east-1",
            s3_access_key_id=KEY_ID,
            s3_secret_access_key=SECRET,
            preview_max_size=96,
            workers=0,
        )
        # Enough iterations that the painting is surely running when the kill comes.
        add_catalog_style(settings, style_dir, passes="48x12,96x24")
        services = Services.open(settings, public_url="http://atelier.test")
        try:
            view = order_artwork(
                services, style_name="starry_night", email="ana@example.com", locale="en", content=small_jpeg(content_dir / "dog.jpg", 160)
            )
            with transaction(services.engine, read_only=True) as session:
                artwork = session.scalars(select(Artwork).where(Artwork.public_id == view.id)).one()
                job_id = artwork.job_id
            assert job_id is not None

            # Both workers start together (one start-up's wait, not two); whichever claims the
            # job first is the one killed.
            workers += [
                Process(f"worker{n}", ["worker"], env | {"ATELIER_DATA_DIR": str(tmp_path / f"w{n}")}, tmp_path / f"worker{n}.log")
                for n in (1, 2)
            ]

            def painting() -> bool:
                assert all(w.alive() for w in workers), "\n".join(w.text()[-2000:] for w in workers)
                job = services.queue.get(job_id)
                assert job is not None
                # A progress write from inside the painting (not the "starting" mark).
                return job.status == JobStatus.RUNNING and job.progress > 0 and bool((job.progress_detail or {}).get("step"))

            wait_until(painting, seconds=90, what="a worker painting", interval=0.1)
            held = services.queue.get(job_id)
            assert held is not None
            victim = next(w for w in workers if f":{w.pid}:" in (held.lease_owner or ""))
            survivor = next(w for w in workers if w is not victim)
            victim.kill()

            def ready() -> bool:
                assert survivor.alive(), survivor.text()[-3000:]
                current = get_artwork(services, view.id)
                assert current is not None and current.status != "failed", survivor.text()[-3000:]
                if current.status != "preview_ready":
                    return False
                # The job function marks the artwork ready; the queue marks the job done just after.
                finished = services.queue.get(job_id)
                return finished is not None and finished.status != JobStatus.RUNNING

            wait_until(ready, seconds=120, what="the artwork painted by the other worker")
            job = services.queue.get(job_id)
            assert job is not None and job.status == JobStatus.DONE and job.attempts == 2
            assert f":{survivor.pid}:" in (job.lease_owner or "")

            inbox.wait_for(1, timeout=30)
            time.sleep(2.5)  # a mail sender round or two later: still one
            assert [m["To"] for m in inbox.messages] == ["ana@example.com"]
            with transaction(services.engine, read_only=True) as session:
                mails = session.scalars(select(OutboxEmail)).all()
                assert [(m.status, m.dedupe_key) for m in mails] == [("sent", f"artwork:{artwork.id}:preview")]
                assert session.scalars(select(Job).where(Job.status == JobStatus.RUNNING)).all() == []
            previews = [b.key for b in services.blobs.list("previews/")]
            assert previews == [f"previews/{view.id}.jpg"]
        finally:
            codes = {w.name: w.stop() for w in workers}
            services.close()
            smtp.stop()
            s3.stop()
    assert codes[victim.name] == -9 and codes[survivor.name] == 0
    assert "attempt 2/3" in survivor.text() and "attempt 2/3" not in victim.text()
