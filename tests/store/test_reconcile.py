"""Reconcile: storage and database compared, reported, and repaired with fix=True."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from atelier.store.blobs import LocalBlobStore, new_key
from atelier.store.db import Artwork, Job, Upload, transaction
from atelier.store.queue import JobQueue, enqueue
from atelier.store.reconcile import reconcile


def _age(store: LocalBlobStore, key: str, hours: float) -> None:
    when = time.time() - hours * 3600
    os.utime(store.path(key), (when, when))


def _upload(key: str, *, temporary: bool = False, created: datetime | None = None) -> Upload:
    return Upload(
        kind="content",
        blob_key=key,
        sha256="0" * 64,
        content_type="image/jpeg",
        size=3,
        temporary=temporary,
        created_at=created or datetime.now(UTC),
    )


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_reconcile_reports_each_kind_of_trouble_and_fix_repairs_it(engine: Engine, blobs: LocalBlobStore) -> None:
    queue = JobQueue(engine, lease_seconds=30)
    put = lambda key: blobs.put(key, b"img", content_type="image/jpeg")  # noqa: E731
    k = {name: new_key(kind, ".jpg") for name, kind in [
        ("kept", "uploads"), ("lost_photo", "uploads"), ("old_temp", "tmp"), ("pending_temp", "tmp"),
        ("preview_ok", "previews"), ("preview_lost", "previews"), ("hd_lost", "hd"), ("being_made", "previews"),
        ("old_orphan", "previews"), ("young_orphan", "uploads"), ("in_flight", "hd"),
    ]}
    for name in ("kept", "old_temp", "preview_ok", "old_orphan", "young_orphan", "in_flight"):
        put(k[name])
    _age(blobs, k["old_orphan"], 3)
    _age(blobs, k["in_flight"], 3)
    long_ago = datetime.now(UTC) - timedelta(hours=48)
    with transaction(engine) as session:
        session.add_all([
            _upload(k["kept"]),
            _upload(k["lost_photo"]),
            _upload(k["old_temp"], temporary=True, created=long_ago),
            _upload(k["pending_temp"], temporary=True),
        ])
        art = {name: Artwork(owner_email="a@example.com", locale="en", style="starry") for name in ("ok", "lost", "hd", "making")}
        art["ok"].preview_key = k["preview_ok"]
        art["lost"].preview_key = k["preview_lost"]
        art["hd"].hd_key = k["hd_lost"]
        art["making"].preview_key = k["being_made"]
        session.add_all(art.values())
        session.flush()
        # the job that made the lost preview, long finished; one still remaking another
        session.add(Job(kind="artwork.preview", payload={"artwork_id": art["lost"].id}, status="done", priority=3, output_key=k["preview_lost"]))
        remaking = enqueue(session, "artwork.preview", {"artwork_id": art["making"].id}, output_key=k["being_made"])
        in_flight = enqueue(session, "artwork.hd", {"artwork_id": art["ok"].id}, output_key=k["in_flight"])
    queue.claim("w", kinds=["artwork.hd"], lease_seconds=0.5)  # its worker dies...
    time.sleep(0.7)

    report = reconcile(engine, blobs, queue=queue, temp_retention=timedelta(hours=24), orphan_grace=timedelta(hours=1))
    assert [b.key for b in report.orphan_blobs] == [k["old_orphan"]]
    missing = {m.key: m for m in report.missing_blobs}
    assert set(missing) == {k["lost_photo"], k["preview_lost"], k["hd_lost"], k["being_made"]}
    assert "cannot be remade" in missing[k["lost_photo"]].remedy
    assert "cannot be remade" in missing[k["hd_lost"]].remedy
    assert missing[k["being_made"]].remake_job_id == remaking
    assert "enqueue artwork.preview again" in missing[k["preview_lost"]].remedy
    assert [j.id for j in report.stuck_jobs] == [in_flight]
    assert [u.key for u in report.expired_uploads] == [k["old_temp"]]
    assert not report.clean and report.actions == []
    # a report changes nothing
    assert blobs.exists(k["old_orphan"]) and blobs.exists(k["old_temp"])
    assert queue.stats().counts["artwork.preview"] == {"queued": 1, "done": 1}

    fixed = reconcile(engine, blobs, queue=queue, fix=True)
    assert fixed.fixed and len(fixed.actions) == 4
    assert not blobs.exists(k["old_orphan"])
    assert blobs.exists(k["young_orphan"]) and blobs.exists(k["in_flight"])  # grace; referenced
    assert not blobs.exists(k["old_temp"])
    remade = {m.key: m for m in fixed.missing_blobs}[k["preview_lost"]].remake_job_id
    assert remade is not None
    job = queue.get(remade)
    assert job is not None
    assert (job.kind, job.payload, job.priority, job.status, job.output_key) == (
        "artwork.preview", {"artwork_id": art["lost"].id}, 3, "queued", k["preview_lost"])
    assert queue.get(in_flight).status == "queued"  # type: ignore[union-attr]
    with transaction(engine, read_only=True) as session:
        assert set(session.scalars(select(Upload.blob_key))) == {k["kept"], k["lost_photo"], k["pending_temp"]}

    again = reconcile(engine, blobs, queue=queue, fix=True)
    assert again.orphan_blobs == [] and again.stuck_jobs == [] and again.expired_uploads == []
    remedies = {m.key: m.remedy for m in again.missing_blobs}
    assert remedies[k["preview_lost"]] == f"job {remade} is remaking it"  # not enqueued twice
    with transaction(engine, read_only=True) as session:
        assert len(session.scalars(select(Job).where(Job.output_key == k["preview_lost"])).all()) == 2


def test_a_consistent_store_is_clean(engine: Engine, blobs: LocalBlobStore) -> None:
    key = new_key("uploads", ".jpg")
    blobs.put(key, b"x", content_type="image/jpeg")
    _age(blobs, key, 10)
    with transaction(engine) as session:
        session.add(_upload(key))
    report = reconcile(engine, blobs, fix=True)
    assert report.clean and report.actions == []
    assert blobs.exists(key)


def test_an_upload_made_permanent_by_the_service_is_not_expired(engine: Engine, blobs: LocalBlobStore) -> None:
    key = new_key("tmp", ".jpg")
    blobs.put(key, b"x", content_type="image/jpeg")
    with transaction(engine) as session:
        session.add(_upload(key, temporary=True, created=datetime.now(UTC) - timedelta(days=3)))
    report = reconcile(engine, blobs)
    assert [u.key for u in report.expired_uploads] == [key]
    with transaction(engine) as session:
        session.scalars(select(Upload)).one().temporary = False  # an order used it
    fixed = reconcile(engine, blobs, fix=True)
    assert fixed.expired_uploads == [] and blobs.exists(key)


def test_folders_named_by_a_job_and_the_mirrored_catalog_are_not_orphans(engine: Engine, blobs: LocalBlobStore) -> None:
    queue = JobQueue(engine)
    with transaction(engine) as session:
        enqueue(session, "batch.stylize", {}, output_key="batches/" + "a" * 32 + "/")
    kept = ["batches/" + "a" * 32 + "/000.jpg", "catalog/muse/manifest.json", "models/vgg/files/ab/x.pth"]
    orphan = "batches/" + "b" * 32 + "/000.jpg"  # its job is gone
    for key in [*kept, orphan]:
        blobs.put(key, b"x", content_type="image/jpeg")
        _age(blobs, key, 3)
    report = reconcile(engine, blobs, queue=queue, orphan_grace=timedelta(hours=1))
    assert [b.key for b in report.orphan_blobs] == [orphan]
