"""Must show (issue 19): two workers with empty local catalogs, a style added through one node --
both paint it. Real processes: `atelier serve --workers 0` (the node where the operator adds the
style), two `atelier worker` processes with catalogs of their own, PostgreSQL and the S3 API server."""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from sqlalchemy import select

from atelier.store.db import Job, JobStatus, make_engine, transaction
from atelier.store.scratch import scratch_database
from tests.faults.fault_fixtures import ATELIER, Process, base_env, wait_ready, wait_until
from tests.service.service_fixtures import free_port, small_jpeg
from tests.store.s3_server import PolicyEnforcingMotoServer
from tests.web.web_fixtures import postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

KEY_ID, SECRET = "catalog-key", "catalog-secret"


@pytest.fixture
def s3() -> Iterator[str]:
    server = PolicyEnforcingMotoServer(ip_address="127.0.0.1", port=free_port(), secret_access_key=SECRET)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_two_workers_with_empty_catalogs_paint_a_style_added_on_another_node(
    s3: str, tmp_path: Path, models_dir: Path, style_dir: Path, content_dir: Path
) -> None:
    bucket = f"atelier-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET).create_bucket(Bucket=bucket)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes: list[Process] = []
    with scratch_database(postgres_server(), prefix="atelier_catalog") as database_url:
        shared = {
            "ATELIER_DATABASE_URL": database_url,
            "ATELIER_STORAGE_URL": f"s3://{bucket}/site",  # catalog sync is on by itself with S3
            "ATELIER_S3_ENDPOINT_URL": s3,
            "ATELIER_S3_REGION": "us-east-1",
            "ATELIER_S3_ACCESS_KEY_ID": KEY_ID,
            "ATELIER_S3_SECRET_ACCESS_KEY": SECRET,
            "ATELIER_PUBLIC_URL": base,
            "ATELIER_SECRET_KEY": "one secret for the deployment",
            "ATELIER_LEASE_SECONDS": "30",
        }

        def node(name: str, **more: str) -> dict[str, str]:
            return base_env(
                models_dir, **shared, ATELIER_DATA_DIR=str(tmp_path / name), ATELIER_STYLES_DIR=str(tmp_path / name / "styles"), **more
            )

        web = node("web", ATELIER_CATALOG_SYNC_SECONDS="1")
        try:
            processes.append(Process("web", ["serve", "--port", str(port), "--workers", "0"], web, tmp_path / "web.log"))
            wait_ready(base, processes[0], seconds=120)
            # worker 1 looks for catalog changes every 2 s; worker 2 practically never (once an
            # hour): it gets the style only because a job needs it.
            for n, every in ((1, "2"), (2, "3600")):
                processes.append(Process(f"worker{n}", ["worker"], node(f"worker{n}", ATELIER_CATALOG_SYNC_SECONDS=every), tmp_path / f"worker{n}.log"))
            wait_until(lambda: all("worker(s) on" in p.text() for p in processes[1:]), seconds=120, what="workers started")
            for n in (1, 2):
                folder = tmp_path / f"worker{n}" / "styles"
                assert not folder.exists() or [p.name for p in folder.iterdir() if not p.name.startswith(".")] == []

            # The operator adds the style on the web node, as anyone would.
            added = subprocess.run(
                [ATELIER, "styles", "add", str(style_dir / "la_muse.jpg"), "--name", "muse", "--title", "The Muse"],
                env=web, capture_output=True, text=True, timeout=300,
            )
            assert added.returncode == 0, added.stderr
            assert "published to the blob store" in added.stdout

            with httpx.Client(base_url=base, timeout=60) as http:
                wait_until(
                    lambda: "muse" in {s["name"] for s in http.get("/api/v1/styles").json()["styles"]},
                    seconds=60, what="the web node's catalog has the new style",
                )
                photos = [small_jpeg(content_dir / name, 160) for name in ("dog.jpg", "golden_gate.jpg")]
                batches = []
                for _ in range(6):
                    response = http.post(
                        "/api/v1/batches",
                        data={"style_name": "muse", "size": "128", "respond": "job"},
                        files=[("content", (f"{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)],
                    )
                    assert response.status_code == 202, response.text
                    batches.append(response.json()["status_url"])

                def all_done() -> bool:
                    assert all(p.alive() for p in processes), "\n".join(p.text()[-3000:] for p in processes)
                    states = [http.get(url).json()["status"] for url in batches]
                    assert "failed" not in states, states
                    return all(s == "done" for s in states)

                wait_until(all_done, seconds=600, what="every batch painted", interval=0.5)
                for url in batches:
                    for result in http.get(url).json()["results"]:
                        assert httpx.get(result["url"], timeout=30).status_code == 200  # on S3

            engine = make_engine(database_url)
            with transaction(engine, read_only=True) as session:
                jobs = session.scalars(select(Job).where(Job.kind == "batch.stylize")).all()
            engine.dispose()
            assert [(j.status, j.attempts) for j in jobs] == [(JobStatus.DONE, 1)] * 6  # no failure, no retry
            painters = {j.lease_owner.split(":")[1] for j in jobs if j.lease_owner}
            assert painters == {str(processes[1].pid), str(processes[2].pid)}, "both workers painted the style"
            published = _hashes(tmp_path / "web" / "styles" / "muse")
            for n in (1, 2):
                assert _hashes(tmp_path / f"worker{n}" / "styles" / "muse") == published
        finally:
            for process in processes:
                process.stop()
        logs = {p.name: p.text() for p in processes}
        assert "synced catalog/" in logs["worker2"]  # the job-triggered sync of the lazy worker
