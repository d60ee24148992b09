"""`atelier serve` and `atelier worker` as real processes: the README's first command on a fresh
data dir, and SIGTERM handing a running job back to the queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from atelier.service.artworks import order_artwork
from atelier.service.context import Services
from atelier.store.db import Artwork, JobStatus, transaction

from tests.service.service_fixtures import LENIENT_CHECK_ENV, add_catalog_style, free_port, make_settings, small_jpeg

pytestmark = pytest.mark.slow

ATELIER = str(Path(sys.executable).with_name("atelier"))


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update({"ATELIER_DEVICE": "cpu", "ATELIER_THREADS": "1", **LENIENT_CHECK_ENV, **values})
    return env


def test_serve_starts_on_a_fresh_data_dir_and_stops_on_sigterm(tmp_path: Path, models_dir: Path, content_dir: Path) -> None:
    port = free_port()
    data = tmp_path / "fresh"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [ATELIER, "serve", "--port", str(port)],
            env=_env(ATELIER_DATA_DIR=str(data), ATELIER_MODELS_DIR=str(models_dir)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    ready = httpx.get(f"{base}/readyz", timeout=2)
                    break
                except httpx.HTTPError:
                    assert process.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.3)
            assert ready.status_code == 200, ready.text
            assert (data / "atelier.db").is_file()  # the first start made the database
            home = httpx.get(f"{base}/", headers={"Accept-Language": "es"}, follow_redirects=False)
            assert home.status_code == 303 and home.headers["location"] == "/es/"
            painted = httpx.post(
                f"{base}/api/v1/stylize",
                data={"style_name": "candy"},
                files={"content": ("dog.jpg", small_jpeg(content_dir / "dog.jpg", 128), "image/jpeg")},
                timeout=60,
            )
            assert painted.status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
    text = log.read_text()
    assert code in (0, -signal.SIGTERM), text
    assert "Application shutdown complete" in text
    assert "worker" in text and "stopped" in text  # the worker thread inside said goodbye


def test_sigterm_hands_a_running_job_back_to_the_queue(
    tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path
) -> None:
    settings = make_settings(tmp_path / "data", models_dir, preview_max_size=96)
    # Many iterations: the job is certainly still painting when the signal comes.
    add_catalog_style(settings, style_dir, passes="96x500")
    services = Services.open(settings)
    try:
        view = order_artwork(
            services, style_name="starry_night", email="a@example.com", locale="en", content=small_jpeg(content_dir / "dog.jpg", 128)
        )
        with transaction(services.engine, read_only=True) as session:
            job_id = session.scalars(select(Artwork.job_id).where(Artwork.public_id == view.id)).one()
        log = tmp_path / "worker.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [ATELIER, "worker"],
                env=_env(
                    ATELIER_DATA_DIR=str(settings.data_dir),
                    ATELIER_MODELS_DIR=str(models_dir),
                    ATELIER_STYLES_DIR=str(settings.styles_path),
                    ATELIER_PREVIEW_MAX_SIZE="96",
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + 120
                while True:
                    job = services.queue.get(job_id)
                    assert job is not None
                    if job.status == JobStatus.RUNNING and (job.progress_detail or {}).get("stage", "").startswith("pass"):
                        break
                    assert process.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.2)
                # Every registered worker is this process's (the job worker and the mail sender's).
                assert {w.pid for w in services.queue.workers()} == {process.pid}
                process.send_signal(signal.SIGTERM)
                code = process.wait(60)
            finally:
                if process.poll() is None:
                    process.kill()
        assert code == 0, log.read_text()
        job = services.queue.get(job_id)
        assert job is not None
        assert (job.status, job.attempts, job.lease_owner) == (JobStatus.QUEUED, 0, None), log.read_text()
        assert services.queue.workers() == []
        assert "released" in log.read_text()
    finally:
        services.close()


def test_a_worker_for_an_unknown_kind_refuses_to_start(tmp_path: Path, models_dir: Path) -> None:
    result = subprocess.run(
        [ATELIER, "worker", "--kind", "no.such.kind"],
        env=_env(ATELIER_DATA_DIR=str(tmp_path), ATELIER_MODELS_DIR=str(models_dir)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no handler for job kinds: no.such.kind" in result.stderr
