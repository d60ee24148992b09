"""``atelier jobs list|show|cancel|retry|priority``: the admin page's queue verbs on the command line.

They act on the database of the settings (ATELIER_DATABASE_URL, or the ATELIER_ENV_FILE file), so
an operator can run them on any machine of a deployment. ``--json`` prints what the JSON API
(``/api/v1/admin/jobs``) answers. A refusal (no such job, a done job cancelled) is one line on
stderr and exit code 2.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from atelier.cli.app import app, fail

jobs_app = typer.Typer(
    help="The job queue: list, show, cancel, retry and re-prioritise jobs.", no_args_is_help=True, add_completion=False
)
app.add_typer(jobs_app, name="jobs")

JSON_OPTION = typer.Option(False, "--json", help="Print JSON (the same as the JSON API's answer).")


@contextmanager
def _services() -> Iterator[Any]:
    from sqlalchemy.exc import DBAPIError

    from atelier.config import get_settings
    from atelier.service.context import Services
    from atelier.service.jobs import JobControlError
    from atelier.store.errors import StoreError

    services = None
    try:
        # No migration here: listing jobs should not change the schema behind a running fleet.
        services = Services.open(get_settings(), migrate_schema=False)
        yield services
    except JobControlError as exc:
        raise fail(str(exc)) from None
    except StoreError as exc:
        raise fail(str(exc)) from None
    except DBAPIError as exc:
        first = str(exc.orig or exc).strip().splitlines()[0]
        raise fail(f"cannot use the database: {first} (is it up, and at the newest schema? `atelier db upgrade`)") from None
    finally:
        if services is not None:
            services.close()


def _line(job: dict[str, Any]) -> str:
    progress = f"{round(job['progress'] * 100):>3}%"
    where = f"#{job['position']} in line" if job["position"] else (job["worker"] or "")
    error = (job["last_error"] or "").splitlines()[0][:60] if job["last_error"] else ""
    return (
        f"{job['id']:>7}  {job['kind']:<16} {job['status']:<9} p{job['priority']:<5} "
        f"{job['attempts']}/{job['max_attempts']}  {progress}  {job['created_at'][:19]}  {where}  {error}"
    ).rstrip()


def _print_one(job: dict[str, Any], as_json: bool, done: str | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(job, indent=2, default=str))
        return
    if done:
        typer.echo(done)
    width = max(len(k) for k in job)
    for key, value in job.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, default=str)
        typer.echo(f"{key:<{width}}  {'' if value is None else value}")


def _act(verb: Callable[..., Any], job_id: int, *args: Any, as_json: bool, done: str) -> None:
    with _services() as services:
        view = verb(services, job_id, *args)
    _print_one(view.public(full=True), as_json, done)


@jobs_app.command("list")
def list_command(
    status: list[str] = typer.Option([], "--status", "-s", help="Only jobs of this status (repeatable): queued, running, done, failed, dead, cancelled."),
    kind: list[str] = typer.Option([], "--kind", "-k", help="Only jobs of this kind (repeatable), e.g. artwork.preview."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="At most this many, newest first."),
    before: int | None = typer.Option(None, "--before", help="Only jobs older than this id (the next page)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Jobs newest first, one line each (id, kind, status, priority, attempts, progress, created,
    place in line or worker, last error)."""
    from atelier.service.jobs import list_jobs

    with _services() as services:
        views = list_jobs(services, statuses=status or None, kinds=kind or None, limit=limit, before_id=before)
    items = [v.public() for v in views]
    if as_json:
        typer.echo(json.dumps({"jobs": items, "next_before": items[-1]["id"] if len(items) == limit else None}, indent=2))
        return
    if not items:
        typer.echo("no jobs", err=True)
        return
    for item in items:
        typer.echo(_line(item))


@jobs_app.command("show")
def show_command(job_id: int = typer.Argument(..., help="The job's id."), as_json: bool = JSON_OPTION) -> None:
    """One job with everything it holds: payload, progress detail, result, last error."""
    from atelier.service.jobs import show_job

    _act(show_job, job_id, as_json=as_json, done="")


@jobs_app.command("cancel")
def cancel_command(job_id: int = typer.Argument(..., help="The job's id."), as_json: bool = JSON_OPTION) -> None:
    """Cancel a queued or running job (a running one's worker drops it at its next heartbeat)."""
    from atelier.service.jobs import cancel_job

    _act(cancel_job, job_id, as_json=as_json, done=f"job {job_id} cancelled")


@jobs_app.command("retry")
def retry_command(job_id: int = typer.Argument(..., help="The job's id."), as_json: bool = JSON_OPTION) -> None:
    """Queue a failed, dead or cancelled job again now, its attempts starting over."""
    from atelier.service.jobs import retry_job

    _act(retry_job, job_id, as_json=as_json, done=f"job {job_id} queued again")


@jobs_app.command("priority")
def priority_command(
    job_id: int = typer.Argument(..., help="The job's id."),
    priority: int = typer.Argument(..., help="The new priority (higher runs first), -1000..1000."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Change a waiting or running job's priority."""
    from atelier.service.jobs import set_priority

    _act(set_priority, job_id, priority, as_json=as_json, done=f"job {job_id} now has priority {priority}")
