"""Scale-out with real processes: the server with --workers 0, two `atelier worker` processes,
PostgreSQL, an S3 API server and an SMTP server on loopback. The client uploads straight to S3
with a presigned POST; a commission and a video job both complete, each painted once, and a
SIGTERM leaves nothing claimed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from sqlalchemy import select

from atelier.store.db import Job, JobStatus, Worker, make_engine, transaction
from atelier.store.scratch import scratch_database

from tests.web.web_fixtures import postgres_server
from tests.service.service_fixtures import LENIENT_CHECK_ENV, add_catalog_style, free_port, link_in, make_settings, small_jpeg, smtp_server, tiny_clip
from tests.store.s3_server import PolicyEnforcingMotoServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ATELIER = str(Path(sys.executable).with_name("atelier"))
KEY_ID, SECRET = "scale-key", "scale-secret"


@pytest.fixture
def s3() -> Iterator[str]:
    server = PolicyEnforcingMotoServer(ip_address="127.0.0.1", port=free_port(), secret_access_key=SECRET)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self.out = open(log, "wb")
        self.popen = subprocess.Popen([ATELIER, *args], env=env, stdout=self.out, stderr=subprocess.STDOUT)

    def stop(self, timeout: float = 60) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        finally:
            self.out.close()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self.out.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def _wait(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def _direct_upload(http: httpx.Client, content_type: str, data: bytes, kind: str) -> str:
    presigned = http.post("/api/v1/uploads/presign", json={"content_type": content_type, "kind": kind})
    assert presigned.status_code == 201, presigned.text
    body = presigned.json()
    assert body["url"].startswith("http://127.0.0.1:") and "/blobs" not in body["url"]  # S3 itself
    posted = httpx.post(body["url"], data=body["fields"], files={"file": ("f", data, content_type)}, timeout=30)
    assert posted.status_code in (200, 201, 204), posted.text
    confirmed = http.post(body["confirm_url"])
    assert confirmed.status_code == 200, confirmed.text
    return str(body["id"])


def test_server_and_two_workers_on_postgres_and_s3(
    s3: str, tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path
) -> None:
    bucket = f"atelier-{uuid.uuid4().hex[:10]}"
    boto3.client(
        "s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
    ).create_bucket(Bucket=bucket)
    inbox, smtp_controller, smtp_port = smtp_server()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    styles = tmp_path / "styles"
    add_catalog_style(make_settings(tmp_path / "prep", models_dir, styles_dir=styles), style_dir, passes="48x6,96x6")
    processes: list[Process] = []
    with scratch_database(postgres_server(), prefix="atelier_scale") as database_url:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")},
            "ATELIER_MODELS_DIR": str(models_dir),
            "ATELIER_STYLES_DIR": str(styles),
            "ATELIER_DATABASE_URL": database_url,
            "ATELIER_STORAGE_URL": f"s3://{bucket}/site",
            "ATELIER_S3_ENDPOINT_URL": s3,
            "ATELIER_S3_REGION": "us-east-1",
            "ATELIER_S3_ACCESS_KEY_ID": KEY_ID,
            "ATELIER_S3_SECRET_ACCESS_KEY": SECRET,
            "ATELIER_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "ATELIER_PUBLIC_URL": base,
            "ATELIER_PREVIEW_MAX_SIZE": "96",
            # No HD painted ahead of payment here (its job would join the list below while it runs).
            "ATELIER_HD_AHEAD": "0",
            "ATELIER_INSTANT_MAX_SIZE": "256",
            "ATELIER_DEVICE": "cpu",
            "ATELIER_THREADS": "1",
            "ATELIER_LEASE_SECONDS": "30",
            **LENIENT_CHECK_ENV,
        }
        try:
            server_env = env | {"ATELIER_DATA_DIR": str(tmp_path / "server")}
            processes.append(Process("server", ["serve", "--port", str(port), "--workers", "0"], server_env, tmp_path / "server.log"))
            _wait(f"{base}/readyz")  # the server made the schema; the workers find it ready
            for n in (1, 2):
                worker_env = env | {"ATELIER_DATA_DIR": str(tmp_path / f"worker{n}")}
                processes.append(Process(f"worker{n}", ["worker"], worker_env, tmp_path / f"worker{n}.log"))
            with httpx.Client(base_url=base, timeout=60) as http:
                photo_id = _direct_upload(http, "image/jpeg", small_jpeg(content_dir / "dog.jpg", 320), "content")
                clip = tiny_clip(tmp_path / "pan.mp4", content_dir / "dog.jpg").read_bytes()
                clip_id = _direct_upload(http, "video/mp4", clip, "video")
                painted = http.get("/api/v1/stylize", params={"content_id": photo_id, "style_name": "candy"})
                assert painted.status_code == 200  # the server reads the photo from S3
                order = http.post(
                    "/api/v1/artworks",
                    data={"content_id": photo_id, "style_name": "starry_night", "email": "ana@example.com", "locale": "en"},
                )
                assert order.status_code == 201, order.text
                video = http.post("/api/v1/videos", data={"content_id": clip_id, "style_name": "candy", "size": "96"})
                assert video.status_code == 202, video.text
                deadline = time.monotonic() + 400
                while True:
                    artwork = http.get(order.json()["status_url"]).json()
                    clip_state = http.get(video.json()["status_url"]).json()
                    if artwork["status"] in ("preview_ready", "failed") and clip_state["status"] in ("done", "failed"):
                        break
                    assert time.monotonic() < deadline, (artwork, clip_state)
                    assert all(p.popen.poll() is None for p in processes), "\n".join(p.text()[-3000:] for p in processes)
                    time.sleep(0.5)
                assert artwork["status"] == "preview_ready" and clip_state["status"] == "done"
                message = inbox.wait_for(1)[0]
                page = http.get(link_in(message).removeprefix(base))
                assert page.status_code == 200
                result = httpx.get(clip_state["result_url"], timeout=30)  # a presigned S3 link
                assert result.status_code == 200 and result.content[4:8] == b"ftyp"
            engine = make_engine(database_url)
            with transaction(engine, read_only=True) as session:
                jobs = session.scalars(select(Job).order_by(Job.id)).all()
            # The preview's mail is a job of its own (mail.send), queued once the preview is ready.
            assert [(j.kind, j.status, j.attempts) for j in jobs] == [
                ("artwork.preview", JobStatus.DONE, 1),
                ("video.stylize", JobStatus.DONE, 1),
                ("mail.send", JobStatus.DONE, 1),
            ]
            # Painted by the worker processes, not by the server (it runs no job worker; its mail
            # sender may be the one that sends the preview's mail, as may a worker's).
            server_pid = processes[0].popen.pid
            paintings = [j for j in jobs if j.kind != "mail.send"]
            assert all(j.lease_owner and f":{server_pid}:" not in j.lease_owner for j in paintings)
        finally:
            codes = {p.name: p.stop() for p in processes}
            smtp_controller.stop()
        logs = "\n".join(f"--- {p.name}\n{p.text()[-2000:]}" for p in processes)
        # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal, so that the
        # exit status says what stopped it; the workers exit 0 after handing back their jobs.
        assert codes["server"] in (0, -signal.SIGTERM) and "Application shutdown complete" in processes[0].text(), logs
        assert codes["worker1"] == codes["worker2"] == 0, logs
        with transaction(engine, read_only=True) as session:
            assert session.scalars(select(Job).where(Job.status == JobStatus.RUNNING)).all() == []
            assert session.scalars(select(Worker)).all() == []  # every worker removed itself
        engine.dispose()
