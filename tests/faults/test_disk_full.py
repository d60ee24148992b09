"""The blob store's disk full: `atelier serve` and `atelier worker` on a local blob folder that is
a small tmpfs, filled to the last byte while a commission waits. Running out of space is an
outage, not anyone's failure: uploads answer 503 with Retry-After (the connection stays usable),
/readyz says the storage is full, and the painting job waits -- its attempt given back, the
artwork not failed, no "we could not paint" mail -- until there is room again; then it completes
by itself, without a restart."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from atelier.store.db import Artwork, Job, JobStatus, OutboxEmail, make_engine, transaction

from tests.faults.fault_fixtures import Process, base_env, wait_ready, wait_until
from tests.service.service_fixtures import add_catalog_style, free_port, make_settings, small_jpeg

pytestmark = pytest.mark.slow

TMPFS_BYTES = 8 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 8 MiB mounted for this test (unmounted after it)."""
    folder = tmp_path / "blobs"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the disk-full test fills a filesystem of its own)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.stdout.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write one file until the filesystem refuses the next byte; the file."""
    filler = folder / "filler.bin"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        try:
            while True:
                out.write(b"\0")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_full_blob_disk_is_an_outage_and_the_commission_completes_when_there_is_room(
    tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path, small_disk: Path
) -> None:
    styles = tmp_path / "styles"
    add_catalog_style(make_settings(tmp_path / "prep", models_dir, styles_dir=styles), style_dir)
    database = tmp_path / "server" / "atelier.db"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = base_env(
        models_dir,
        ATELIER_DATA_DIR=str(tmp_path / "server"),
        ATELIER_DATABASE_URL=f"sqlite:///{database}",
        ATELIER_STYLES_DIR=str(styles),
        ATELIER_STORAGE_URL=small_disk.as_uri(),
        ATELIER_STORAGE_MIN_FREE_MB="1",
    )
    photo = small_jpeg(content_dir / "dog.jpg", 160)
    server = Process("server", ["serve", "--port", str(port), "--workers", "0"], env, tmp_path / "server.log")
    worker: Process | None = None
    engine = make_engine(f"sqlite:///{database}")
    try:
        wait_ready(base, server)
        with httpx.Client(base_url=base, timeout=60) as http:
            order = http.post(
                "/api/v1/artworks",
                data={"style_name": "starry_night", "email": "ana@example.com", "locale": "en"},
                files={"content": ("dog.jpg", photo, "image/jpeg")},
            )
            assert order.status_code == 201, order.text
            public_id = order.json()["id"]

            filler = fill(small_disk)

            upload = http.post("/api/v1/uploads", files={"file": ("dog.jpg", photo, "image/jpeg")})
            assert upload.status_code == 503, upload.text
            assert upload.json()["error"]["code"] == "store_error" and int(upload.headers["Retry-After"]) > 0
            # The same keep-alive connection answers the next request.
            assert http.get("/healthz").status_code == 200
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["storage"].startswith("full"), ready.text
            page = http.get("/en/commission", headers={"Accept": "text/html"})
            assert page.status_code == 200  # reading still works

            worker = Process("worker", ["worker"], env, tmp_path / "worker.log")

            def job() -> Job:
                with transaction(engine, read_only=True) as session:
                    artwork = session.scalars(select(Artwork).where(Artwork.public_id == public_id)).one()
                    found = session.get(Job, artwork.job_id)
                    assert found is not None
                    return found

            def waits() -> bool:
                assert worker is not None and worker.alive(), worker.text()[-3000:] if worker else ""
                return "storage is full" in worker.text() or job().attempts > 1 or job().status != JobStatus.QUEUED and job().status != JobStatus.RUNNING

            wait_until(waits, seconds=120, what="the painting to run into the full disk")
            wait_until(lambda: job().status == JobStatus.QUEUED, seconds=30, what="the job handed back")
            # While the disk stays full the worker checks the store before it claims again:
            # the job is not painted over and over.
            wait_until(lambda: worker.text().count("the storage is away") >= 3, seconds=60, what="the worker waiting out the outage")  # type: ignore[union-attr]
            assert worker.text().count("claimed by") == 1, worker.text()[-3000:]
            held = job()
            # Handed back, not failed: the attempt is not spent, the artwork waits, nobody is
            # told their painting failed.
            assert held.status == JobStatus.QUEUED and held.attempts == 0, (held.status, held.attempts, held.last_error)
            with transaction(engine, read_only=True) as session:
                artwork = session.scalars(select(Artwork).where(Artwork.public_id == public_id)).one()
                assert artwork.status == "queued"
                mails = [m.dedupe_key for m in session.scalars(select(OutboxEmail))]
            assert not any(key.endswith(":failed") for key in mails), mails

            filler.unlink()  # room again

            def painted() -> bool:
                assert worker is not None and worker.alive(), worker.text()[-3000:]
                return job().status == JobStatus.DONE

            wait_until(painted, seconds=240, what="the commission painted once there was room")
            done = job()
            assert done.attempts == 1, done.attempts
            with transaction(engine, read_only=True) as session:
                artwork = session.scalars(select(Artwork).where(Artwork.public_id == public_id)).one()
                assert artwork.status == "preview_ready"
                mails = [m.dedupe_key for m in session.scalars(select(OutboxEmail))]
            assert mails == [f"artwork:{artwork.id}:preview"]
            assert http.get("/readyz").status_code == 200
            again = http.post("/api/v1/uploads", files={"file": ("dog.jpg", photo, "image/jpeg")})
            assert again.status_code == 201, again.text
        assert server.alive()
    finally:
        engine.dispose()
        if worker is not None:
            worker.stop()
        server.stop()
