"""``atelier db upgrade``, ``atelier reconcile [--fix]`` and ``atelier bench queue``."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from atelier.cli.app import app, fail
from atelier.cli.bench import bench_app
from atelier.config import Settings, get_settings
from atelier.store.errors import StoreError

log = logging.getLogger(__name__)

db_app = typer.Typer(
    help="The database: create or migrate its tables.", no_args_is_help=True, add_completion=False
)
app.add_typer(db_app, name="db")


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def store_refusals() -> Iterator[None]:
    """A store or database that refuses: one line, exit code 2."""
    try:
        yield
    except StoreError as exc:
        raise fail(str(exc)) from None
    except OperationalError as exc:
        raise fail(f"cannot use the database: {exc.orig or exc}".splitlines()[0]) from None


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("head", help="The revision to reach (default: the newest)."),
) -> None:
    """Create the tables, or migrate them to the newest schema. Safe to run again."""
    from atelier.store.db import make_engine
    from atelier.store.migrations import current_revision, upgrade

    settings = get_settings()
    assert settings.database_url is not None
    with store_refusals():
        engine = make_engine(settings.database_url)
        before = current_revision(engine)
        upgrade(engine, revision)
        after = current_revision(engine)
        engine.dispose()
    where = _safe_url(settings.database_url)
    if before == after:
        typer.echo(f"{where}: already at {after}")
    else:
        typer.echo(f"{where}: {before or 'empty'} -> {after}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the database and whether it is the newest."""
    from atelier.store.db import make_engine
    from atelier.store.migrations import current_revision, head_revision

    settings = get_settings()
    assert settings.database_url is not None
    with store_refusals():
        engine = make_engine(settings.database_url)
        current = current_revision(engine)
        engine.dispose()
    head = head_revision()
    state = "up to date" if current == head else f"behind (newest: {head}; run `atelier db upgrade`)"
    typer.echo(f"{current or 'empty'}: {state}")


@db_app.command("check")
def db_check() -> None:
    """Check that the database file is whole (SQLite's integrity_check) and summarise it: size,
    pages, schema revision, rows per table. Exit 0 when whole, 1 when damaged. Safe while
    Atelier runs (it only reads)."""
    from atelier.store.integrity import report

    settings = get_settings()
    assert settings.database_url is not None
    with store_refusals():
        found = report(settings.database_url)
    from atelier.store.migrations import head_revision

    typer.echo(f"database: {found.where} ({found.backend})")
    head = head_revision()
    for name, value in found.facts.items():
        if name == "schema revision":
            value = f"{value} (up to date)" if value == head else f"{value} (newest: {head}; `atelier db upgrade`)"
        typer.echo(f"  {name}: {value}")
    if found.tables:
        typer.echo("tables:")
        for name, rows in found.tables.items():
            typer.echo(f"  {name}: {rows if isinstance(rows, str) else f'{rows} rows'}")
    if not found.checked:
        typer.echo("integrity: not checked here (PostgreSQL checks its own pages; see amcheck and pg_dump)")
        return
    if not found.damaged:
        typer.echo("integrity: ok")
        return
    typer.echo("integrity: damaged")
    for problem in found.problems:
        typer.echo(f"  {problem}")
    typer.echo(
        "what to do: stop Atelier, keep a copy of this file, and restore the database from a backup "
        "(SECURITY.md, 'Backups'); then run `atelier reconcile` to find rows and blobs out of step. "
        "Without a backup, `sqlite3 atelier.db .recover | sqlite3 recovered.db` saves what can be read."
    )
    raise typer.Exit(1)


def blob_store_from_settings(settings: Settings):  # type: ignore[no-untyped-def]
    """The BlobStore the settings name."""
    from atelier.store.blobs import blob_store_from_url

    assert settings.storage_url is not None
    return blob_store_from_url(
        settings.storage_url,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        min_free_bytes=settings.storage_min_free_mb * 2**20,
    )


@app.command(
    "reconcile",
    help="Compare blob storage with the database: orphan blobs, missing blobs (with --fix their "
    "jobs are enqueued again), jobs stuck past their lease, temporary uploads past retention.",
)
def reconcile_command(
    fix: bool = typer.Option(False, "--fix", help="Repair what can be repaired (else only report)."),
    grace_minutes: float = typer.Option(
        60.0,
        "--grace-minutes",
        min=0.0,
        help="Leave blobs younger than this alone: a worker may not have committed their row yet.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    from atelier.store.db import make_engine
    from atelier.store.queue import JobQueue
    from atelier.store.reconcile import reconcile

    settings = get_settings()
    assert settings.database_url is not None
    with store_refusals():
        engine = make_engine(settings.database_url)
        blobs = blob_store_from_settings(settings)
        report = reconcile(
            engine,
            blobs,
            fix=fix,
            temp_retention=timedelta(hours=settings.temp_retention_hours),
            orphan_grace=timedelta(minutes=grace_minutes),
            queue=JobQueue(engine, lease_seconds=settings.lease_seconds),
        )
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(asdict(report) | {"clean": report.clean}, default=str, indent=2))
        return
    typer.echo(f"orphan blobs: {len(report.orphan_blobs)}")
    for info in report.orphan_blobs:
        typer.echo(f"  {info.key} ({info.size} bytes, {info.modified:%Y-%m-%d %H:%M})")
    typer.echo(f"missing blobs: {len(report.missing_blobs)}")
    for missing in report.missing_blobs:
        typer.echo(f"  {missing.table}/{missing.record_id} {missing.column}={missing.key}: {missing.remedy}")
    typer.echo(f"jobs stuck past their lease: {len(report.stuck_jobs)}")
    for job in report.stuck_jobs:
        typer.echo(
            f"  job {job.id} ({job.kind}) held by {job.lease_owner}, lease ended "
            f"{job.lease_expires_at:%Y-%m-%d %H:%M:%S}, attempt {job.attempts}/{job.max_attempts}"
        )
    typer.echo(f"expired temporary uploads: {len(report.expired_uploads)}")
    for upload in report.expired_uploads:
        typer.echo(f"  {upload.key} (uploaded {upload.created_at:%Y-%m-%d %H:%M})")
    if fix:
        typer.echo(f"repairs: {len(report.actions)}")
        for action in report.actions:
            typer.echo(f"  {action}")
    elif not report.clean:
        typer.echo("run again with --fix to repair")


@bench_app.command("queue")
def bench_queue_command(
    workers: str = typer.Option("1,4,8", "--workers", help="Worker process counts, comma-separated."),
    jobs: int = typer.Option(2000, "--jobs", min=1, help="Jobs per round."),
    sqlite: bool = typer.Option(True, "--sqlite/--no-sqlite", help="Measure SQLite (a temporary file)."),
    postgres: str | None = typer.Option(
        None,
        "--postgres",
        help="A PostgreSQL server URL; a scratch database is created there and dropped after. "
        "Default: the server of ATELIER_DATABASE_URL when that is PostgreSQL.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Claims per second (claim + complete) with 1, 4 and 8 worker processes on each backend."""
    from atelier.store.bench import bench_queue
    from atelier.store.db import make_engine
    from atelier.store.migrations import upgrade
    from atelier.store.scratch import scratch_database

    try:
        counts = [int(n) for n in workers.split(",") if n.strip()]
    except ValueError:
        raise fail(f"--workers takes numbers separated by commas, not {workers!r}") from None
    if not counts or min(counts) < 1:
        raise fail("--workers needs at least one count of 1 or more")
    settings = get_settings()
    if postgres is None and settings.database_url and settings.database_url.startswith("postgresql"):
        postgres = settings.database_url

    def run(url: str) -> list:  # type: ignore[type-arg]
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return bench_queue(url, worker_counts=counts, jobs=jobs)

    results = []
    with store_refusals():
        if sqlite:
            with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp:
                results += run(f"sqlite:///{Path(tmp) / 'bench.db'}")
        if postgres:
            with scratch_database(postgres, prefix="atelier_bench") as url:
                results += run(url)
    if not results:
        raise fail("nothing to measure: pass --postgres URL or leave --sqlite on")
    if as_json:
        typer.echo(
            json.dumps(
                [asdict(r) | {"claims_per_second": round(r.claims_per_second, 1)} for r in results],
                indent=2,
            )
        )
        return
    typer.echo(f"{'backend':<11}{'workers':>8}{'jobs':>7}{'seconds':>9}{'claims/s':>10}")
    for r in results:
        typer.echo(f"{r.backend:<11}{r.workers:>8}{r.jobs:>7}{r.seconds:>9.2f}{r.claims_per_second:>10.0f}")
