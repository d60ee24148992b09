"""The deployment of docs/DEPLOY.md, exercised: the Procfile's own commands (one web process, two
workers), every process reading its settings from one ATELIER_ENV_FILE (PostgreSQL, the S3 API
server, a real SMTP server). A commission and a long clip (cut into parts) are ordered; a
worker is SIGKILLed while it paints and the web process is SIGKILLed and started again; every
job still finishes, once: the preview and the clip are in the bucket, one mail to the buyer,
every job done, the killed worker's job claimed again by the other one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import httpx
import pytest
from sqlalchemy import select

from atelier.store.db import Job, JobStatus, OutboxEmail, make_engine, transaction
from atelier.store.scratch import scratch_database

from tests.faults.fault_fixtures import wait_until
from tests.service.service_fixtures import LENIENT_CHECK_ENV, add_catalog_style, free_port, make_settings, small_jpeg, smtp_server, tiny_clip
from tests.store.s3_server import PolicyEnforcingMotoServer
from tests.web.web_fixtures import postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"
KEY_ID, SECRET = "deploy-key", "deploy-secret"
LEASE_SECONDS = 4


def procfile() -> dict[str, str]:
    """The Procfile's process types and their commands."""
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


class Unit:
    """One process of the Procfile, run the way Procfile runners do (``sh -c``), its output in
    a log file."""

    def __init__(self, name: str, command: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.out = open(log, "ab")  # noqa: SIM115 - closed in stop/kill
        self.log = log
        self.popen = subprocess.Popen(["sh", "-c", f"exec {command}"], env=env, stdout=self.out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> int:
        self.popen.send_signal(signal.SIGKILL)
        code = self.popen.wait()
        self.out.close()
        return code

    def stop(self) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()
        finally:
            self.out.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def test_the_procfile_on_postgres_s3_and_smtp_finishes_every_job_once_through_a_worker_and_a_web_kill(
    tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path
) -> None:
    entries = procfile()
    assert set(entries) == {"web", "worker"} and "--workers 0" in entries["web"]
    server_url = postgres_server()
    s3 = PolicyEnforcingMotoServer(ip_address="127.0.0.1", port=free_port(), secret_access_key=SECRET)
    s3.start()
    endpoint = "http://{}:{}".format(*s3.get_host_and_port())
    bucket = f"deploy-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET).create_bucket(Bucket=bucket)
    inbox, smtp, smtp_port = smtp_server()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    styles = tmp_path / "styles"
    # Enough iterations that the painting is surely running when the kill comes.
    add_catalog_style(make_settings(tmp_path / "prep", models_dir, styles_dir=styles), style_dir, passes="48x12,96x24")
    units: list[Unit] = []
    with scratch_database(server_url, prefix="atelier_deploy") as database_url:
        env_file = tmp_path / "atelier.env"
        env_file.write_text(
            "\n".join(
                f"{name}={value}"
                for name, value in {
                    "ATELIER_DATABASE_URL": database_url,
                    "ATELIER_STORAGE_URL": f"s3://{bucket}/site",
                    "ATELIER_S3_ENDPOINT_URL": endpoint,
                    "ATELIER_S3_REGION": "us-east-1",
                    "ATELIER_S3_ACCESS_KEY_ID": KEY_ID,
                    "ATELIER_S3_SECRET_ACCESS_KEY": SECRET,
                    "ATELIER_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
                    "ATELIER_PUBLIC_URL": base,
                    "ATELIER_MODELS_DIR": str(models_dir),
                    "ATELIER_STYLES_DIR": str(styles),
                    "ATELIER_LEASE_SECONDS": str(LEASE_SECONDS),
                    "ATELIER_PREVIEW_MAX_SIZE": "96",
                    "ATELIER_INSTANT_MAX_SIZE": "256",
                    "ATELIER_VIDEO_CHUNK_SECONDS": "0.5",
                    "ATELIER_DEVICE": "cpu",
                    "ATELIER_THREADS": "1",
                    **LENIENT_CHECK_ENV,
                }.items()
            )
            + "\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")} | {
            "ATELIER_ENV_FILE": str(env_file),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PORT": str(port),
        }

        def start(name: str, n: int = 0) -> Unit:
            unit = Unit(f"{name}{n}", entries[name], env | {"ATELIER_DATA_DIR": str(tmp_path / f"{name}{n}")}, tmp_path / f"{name}{n}.log")
            units.append(unit)
            return unit

        def up() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        engine = make_engine(database_url)
        try:
            web = start("web")
            wait_until(up, seconds=90, what="the web process ready")
            workers = [start("worker", 1), start("worker", 2)]
            with httpx.Client(base_url=base, timeout=60) as http:
                order = http.post(
                    "/api/v1/artworks",
                    files={"content": ("dog.jpg", small_jpeg(content_dir / "dog.jpg", 160), "image/jpeg")},
                    data={"style_name": "starry_night", "email": "ana@example.com", "locale": "en"},
                )
                assert order.status_code == 201, order.text
                clip = tiny_clip(tmp_path / "pan.mp4", content_dir / "dog.jpg", frames=24, fps=12).read_bytes()
                video = http.post("/api/v1/videos", files={"content": ("pan.mp4", clip, "video/mp4")}, data={"style_name": "candy", "size": "96"})
                assert video.status_code == 202, video.text
                artwork_url, video_url = order.json()["status_url"], video.json()["status_url"]

            # SIGKILL the worker that paints the commission, once it is well into it.
            def painting() -> Job | None:
                assert all(w.alive() for w in workers), "\n".join(w.text()[-2000:] for w in workers)
                with transaction(engine, read_only=True) as session:
                    job = session.scalars(select(Job).where(Job.kind == "artwork.preview")).one()
                    return job if job.status == JobStatus.RUNNING and job.progress > 0 and job.lease_owner else None

            held = wait_until(painting, seconds=120, what="a worker painting the commission", interval=0.1)
            victim = next(w for w in workers if f":{w.pid}:" in (held.lease_owner or ""))
            survivor = next(w for w in workers if w is not victim)
            assert victim.kill() == -signal.SIGKILL
            # ... and the web process, then start it again as the Procfile says.
            assert web.kill() == -signal.SIGKILL
            assert not up()
            start("web", 1)
            wait_until(up, seconds=90, what="the web process back")

            def finished() -> bool:
                assert survivor.alive(), survivor.text()[-3000:]
                with httpx.Client(base_url=base, timeout=30) as http:
                    artwork, clip_state = http.get(artwork_url).json(), http.get(video_url).json()
                assert artwork["status"] != "failed" and clip_state["status"] != "failed", (artwork, clip_state)
                return artwork["status"] == "preview_ready" and clip_state["status"] == "done"

            wait_until(finished, seconds=400, what="the commission and the clip finished", interval=0.5)
            inbox.wait_for(1, timeout=60)
            time.sleep(2.5)  # a mail round or two later: still one
            assert [m["To"] for m in inbox.messages] == ["ana@example.com"]
            with transaction(engine, read_only=True) as session:
                jobs = session.scalars(select(Job).order_by(Job.id)).all()
                mails = session.scalars(select(OutboxEmail)).all()
            painting_jobs = [j for j in jobs if j.kind in ("artwork.preview", "video.stylize", "video.chunk")]
            assert sorted(j.kind for j in painting_jobs) == ["artwork.preview", *["video.chunk"] * 4, "video.stylize"]
            assert all(j.status == JobStatus.DONE for j in jobs), [(j.kind, j.status) for j in jobs]
            preview = next(j for j in jobs if j.kind == "artwork.preview")
            assert preview.attempts == 2 and f":{survivor.pid}:" in (preview.lease_owner or "")
            assert all(j.attempts == 1 for j in painting_jobs if j.kind == "video.chunk")
            assert [m.status for m in mails] == ["sent"]
            client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
            keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="site/").get("Contents", []))
            assert len([k for k in keys if k.startswith("site/previews/")]) == 1
            assert [k for k in keys if k.startswith("site/videos/")] == [f"site/videos/{video.json()['id']}.mp4"]  # the parts are gone
        finally:
            codes = {unit.name: unit.stop() for unit in units}
            engine.dispose()
            smtp.stop()
            s3.stop()
    logs = "\n".join(f"--- {u.name}\n{u.text()[-1500:]}" for u in units)
    assert codes[survivor.name] == 0, logs  # the survivor handed back nothing: it stopped idle
