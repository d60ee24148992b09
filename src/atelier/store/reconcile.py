"""Compare blob storage with the database, report what disagrees and, asked to, repair it.

Four kinds of trouble (the ones a service like this accumulates over months):

- orphan blobs: stored, but no row refers to them (a crash between writing a blob and committing
  its row, a deleted record). A job output key ending in ``/`` names a folder (every blob under
  it is the job's); the catalog and weights the mirror keeps (``catalog/``, ``models/``) are
  named by its manifests, not by rows, and are never orphans. Repair: delete them. Blobs younger than a grace period are left
  alone: a worker may have written one and not yet committed the row that names it.
- missing blobs: a row says a blob exists and it does not. Outputs of jobs (previews, HD files)
  are remade: the job that wrote the key (``jobs.output_key``) is enqueued again. A lost photo a
  user sent cannot be remade and is only reported.
- stuck jobs: running with a lease that ran out (their worker died). Claims pick them up anyway;
  repair settles them now: back to the queue, or ``dead`` if out of attempts.
- expired temporary uploads: past their ``expires_at`` (or the retention time when unset).
  Repair: delete the blob and the row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select

from atelier.store.blobs import BlobInfo, BlobStore
from atelier.store.db import Artwork, Job, JobStatus, Upload, transaction
from atelier.store.mirror import MIRROR_PREFIXES
from atelier.store.queue import JobInfo, JobQueue, enqueue

log = logging.getLogger(__name__)

# Every column that names a blob. A blob named by none of them is an orphan.
REFERENCING_COLUMNS = (
    Upload.blob_key,
    Artwork.preview_key,
    Artwork.hd_key,
    Artwork.painting_key,
    Job.preview_key,
    Job.output_key,
)
# Blobs under these prefixes belong to the catalog and weights mirror (atelier.store.mirror):
# its manifests name them, no row does.
MIRRORED_PREFIXES = MIRROR_PREFIXES
# The columns that promise the blob exists (job outputs may not be written yet; a job's
# intermediate preview is a convenience).
PROMISING_COLUMNS = (Artwork.preview_key, Artwork.hd_key)


@dataclass(frozen=True)
class MissingBlob:
    """A row that names a blob the store does not have."""

    table: str
    record_id: str
    column: str
    key: str
    remedy: str  # what was (or would be) done, in words
    remake_job_id: int | None = None  # the job enqueued to remake it (with fix)


@dataclass(frozen=True)
class ExpiredUpload:
    """A temporary upload past its retention time."""

    upload_id: str
    key: str
    created_at: datetime
    blob_present: bool


@dataclass
class ReconcileReport:
    """What reconcile found, and (with fix) what it did."""

    orphan_blobs: list[BlobInfo] = field(default_factory=list)
    missing_blobs: list[MissingBlob] = field(default_factory=list)
    stuck_jobs: list[JobInfo] = field(default_factory=list)
    expired_uploads: list[ExpiredUpload] = field(default_factory=list)
    fixed: bool = False
    actions: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing found."""
        return not (
            self.orphan_blobs or self.missing_blobs or self.stuck_jobs or self.expired_uploads
        )


def reconcile(
    engine: Engine,
    blobs: BlobStore,
    *,
    fix: bool = False,
    temp_retention: timedelta = timedelta(hours=24),
    orphan_grace: timedelta = timedelta(hours=1),
    queue: JobQueue | None = None,
    now: datetime | None = None,
) -> ReconcileReport:
    """Compare ``blobs`` with the database on ``engine``; with ``fix``, repair what can be."""
    now = now or datetime.now(UTC)
    queue = queue or JobQueue(engine)
    report = ReconcileReport(fixed=fix)

    with transaction(engine, read_only=True) as session:
        referenced: set[str] = set()
        for column in REFERENCING_COLUMNS:
            referenced.update(session.scalars(select(column).where(column.is_not(None))))
        uploads = session.execute(
            select(
                Upload.id,
                Upload.blob_key,
                Upload.temporary,
                Upload.expires_at,
                Upload.created_at,
            )
        ).all()
        promised = [
            (column, record_id, key)
            for column in PROMISING_COLUMNS
            for record_id, key in session.execute(
                select(column.class_.id, column).where(column.is_not(None))  # type: ignore[attr-defined]
            )
        ]

    stored = {info.key: info for info in blobs.list()}

    # orphans. A job whose output is a folder of blobs (a batch's pictures, a clip's segments)
    # names the folder: an output key ending in "/" covers every key under it.
    folders = tuple(key for key in referenced if key.endswith("/")) + MIRRORED_PREFIXES
    for key, info in stored.items():
        if key in referenced or key.startswith(folders):
            continue
        if info.modified < now - orphan_grace:
            report.orphan_blobs.append(info)

    # temporary uploads past their time; uploads whose blob is gone
    for upload in uploads:
        present = upload.blob_key in stored
        if upload.temporary:
            limit = upload.expires_at or upload.created_at + temp_retention
            if limit < now:
                report.expired_uploads.append(
                    ExpiredUpload(upload.id, upload.blob_key, upload.created_at, present)
                )
            # a temporary upload not yet there is a presigned upload still pending
        elif not present:
            report.missing_blobs.append(
                MissingBlob(
                    "uploads",
                    upload.id,
                    "blob_key",
                    upload.blob_key,
                    "cannot be remade: the file the user sent is lost",
                )
            )

    # job outputs the database promises
    for column, record_id, key in promised:
        if key in stored:
            continue
        report.missing_blobs.append(
            _remake(engine, column.class_.__tablename__, str(record_id), column.key, key, fix)  # type: ignore[attr-defined]
        )

    report.stuck_jobs = queue.expired()

    if fix:
        _repair(engine, blobs, queue, report)
    return report


def _remake(engine: Engine, table: str, record_id: str, column: str, key: str, fix: bool) -> MissingBlob:
    """Find the job that writes ``key`` and enqueue it again (unless one is on it already)."""
    with transaction(engine) as session:
        jobs = session.scalars(
            select(Job).where(Job.output_key == key).order_by(Job.id.desc())
        ).all()
        if not jobs:
            return MissingBlob(table, record_id, column, key, "cannot be remade: no job writes it")
        active = [j for j in jobs if j.status in (JobStatus.QUEUED, JobStatus.RUNNING)]
        if active:
            return MissingBlob(
                table, record_id, column, key, f"job {active[0].id} is remaking it", active[0].id
            )
        model = jobs[0]
        if not fix:
            return MissingBlob(
                table, record_id, column, key, f"remake: enqueue {model.kind} again (as job {model.id})"
            )
        job_id = enqueue(
            session,
            model.kind,
            model.payload,
            priority=model.priority,
            max_attempts=model.max_attempts,
            output_key=key,
        )
    log.info("re-enqueued %s as job %s to remake %s", model.kind, job_id, key)
    return MissingBlob(table, record_id, column, key, f"re-enqueued {model.kind} as job {job_id}", job_id)


def _repair(engine: Engine, blobs: BlobStore, queue: JobQueue, report: ReconcileReport) -> None:
    for info in report.orphan_blobs:
        blobs.delete(info.key)
        report.actions.append(f"deleted orphan blob {info.key}")
    for missing in report.missing_blobs:
        if missing.remake_job_id is not None and missing.remedy.startswith("re-enqueued"):
            report.actions.append(f"{missing.key}: {missing.remedy}")
    if report.stuck_jobs:
        requeued, dead = queue.requeue_expired()
        report.actions += [f"requeued stuck job {i}" for i in requeued]
        report.actions += [f"stuck job {i} had no attempts left: dead" for i in dead]
    if report.expired_uploads:
        ids = [u.upload_id for u in report.expired_uploads]
        with transaction(engine) as session:
            # Re-check inside the transaction: the service may have kept one meanwhile.
            gone = session.scalars(
                delete(Upload)
                .where(Upload.id.in_(ids), Upload.temporary.is_(True))
                .returning(Upload.blob_key)
            ).all()
        for key in gone:
            blobs.delete(key)
            report.actions.append(f"deleted expired temporary upload {key}")


__all__ = ["ExpiredUpload", "MissingBlob", "ReconcileReport", "reconcile"]
