"""The catalog in the blob store: a style added on one machine reaches another's jobs, and a job
for a style a machine lacks waits for it (its attempts untouched) instead of failing for good."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from atelier.service.batches import BatchOptions, StyleChoice, get_batch, order_batch, plan
from atelier.service.catalog_sync import publish_styles, sync_catalog
from atelier.service.context import Services
from atelier.service.uploads import store_upload
from atelier.service.worker import Worker
from atelier.store.db import Job, JobStatus, transaction, utcnow
from tests.service.service_fixtures import add_catalog_style, make_settings, small_jpeg


@pytest.fixture
def machines(tmp_path: Path, models_dir: Path) -> Iterator[tuple[Services, Services]]:
    """Two machines: one database and one blob store, each its own disk (data dir, catalog)."""
    shared = {
        "database_url": f"sqlite:///{tmp_path / 'shared.db'}",
        "storage_url": (tmp_path / "bucket").as_uri(),
        "catalog_sync": "on",
        "secret_key": "one secret for the whole deployment",
    }
    a = Services.open(make_settings(tmp_path / "a", models_dir, **shared), public_url="http://testserver")
    b = Services.open(make_settings(tmp_path / "b", models_dir, **shared), public_url="http://testserver")
    yield a, b
    a.close()
    b.close()


def _batch_for(services: Services, photo: bytes, style: str) -> str:
    upload, _ = store_upload(services, photo, kind="content", temporary=True)
    # planned on a machine that knows the style (as the web node that took the order did)
    pairs = plan(services, [upload], [StyleChoice(name=style)], BatchOptions(size=64))
    return order_batch(services, pairs, BatchOptions(size=64)).id


def test_a_style_added_on_one_machine_is_painted_by_the_other(
    machines: tuple[Services, Services], style_dir: Path, content_dir: Path
) -> None:
    a, b = machines
    add_catalog_style(a.settings, style_dir, name="muse")
    assert publish_styles(a.blobs, a.settings) == ["muse"]
    assert b.catalog.get("muse") is None and not (b.settings.styles_path / "muse").exists()
    batch = _batch_for(a, small_jpeg(content_dir / "dog.jpg", 96), "muse")
    assert Worker(b, worker_id="b").run_once() == "done"
    assert get_batch(a, batch).status == "done"  # type: ignore[union-attr]
    entry = b.catalog.get("muse")
    assert entry is not None and entry.kind == "painting"
    assert (b.settings.styles_path / "muse" / "style.toml").read_bytes() == (a.settings.styles_path / "muse" / "style.toml").read_bytes()


def test_a_job_for_a_style_not_here_yet_waits_without_spending_attempts(
    machines: tuple[Services, Services], style_dir: Path, content_dir: Path
) -> None:
    a, b = machines
    add_catalog_style(a.settings, style_dir, name="muse")  # on a's disk, not published yet
    batch = _batch_for(a, small_jpeg(content_dir / "dog.jpg", 96), "muse")
    assert Worker(b, worker_id="b").run_once() == "deferred"
    job = b.queue.list_jobs()[0]
    assert job.status == JobStatus.QUEUED and job.attempts == 0
    assert "style 'muse' is not in the store (yet)" in (job.progress_detail or {}).get("waiting_for", "")
    assert job.run_at > utcnow() + timedelta(seconds=3)  # not claimed again at once
    assert Worker(b, worker_id="b").run_once() is None
    publish_styles(a.blobs, a.settings, ["muse"])
    time.sleep(max(0.0, (job.run_at - utcnow()).total_seconds()) + 0.2)
    assert Worker(b, worker_id="b").run_once() == "done"
    assert b.queue.get(job.id).attempts == 1  # type: ignore[union-attr]
    assert get_batch(a, batch).status == "done"  # type: ignore[union-attr]


def test_a_style_that_stays_out_of_the_store_fails_the_job_in_the_end(
    machines: tuple[Services, Services], style_dir: Path, content_dir: Path
) -> None:
    a, b = machines
    add_catalog_style(a.settings, style_dir, name="muse")
    _batch_for(a, small_jpeg(content_dir / "dog.jpg", 96), "muse")
    with transaction(b.engine) as session:
        session.execute(update(Job).values(created_at=utcnow() - timedelta(hours=1)))
    assert Worker(b, worker_id="b").run_once() == "failed"
    job = b.queue.list_jobs()[0]
    assert job.status == JobStatus.FAILED and "unknown style 'muse'" in (job.last_error or "")


def test_sync_reloads_the_catalog_and_removes_an_unpublished_style(machines: tuple[Services, Services], style_dir: Path) -> None:
    a, b = machines
    add_catalog_style(a.settings, style_dir, name="muse")
    publish_styles(a.blobs, a.settings)
    assert b.catalog.get("muse") is None
    report = sync_catalog(b)
    assert report.added == ["muse"] and b.catalog.get("muse") is not None
    from atelier.service.catalog_sync import catalog_mirror

    catalog_mirror(a.blobs, a.settings).unpublish("muse")
    assert sync_catalog(b).removed == ["muse"] and b.catalog.get("muse") is None
