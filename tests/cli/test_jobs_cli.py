"""`atelier jobs list|show|cancel|retry|priority`, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from atelier.config import get_settings
from atelier.store.db import make_engine
from atelier.store.migrations import upgrade
from atelier.store.queue import JobQueue
from tests.store.store_fixtures import BACKENDS
from tests.web.web_fixtures import postgres_server

ATELIER = [sys.executable, "-c", "from atelier.cli import main; main()"]


@pytest.fixture(params=BACKENDS)
def queue(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobQueue]:
    """A migrated database (SQLite file or scratch PostgreSQL) named by ATELIER_DATABASE_URL."""
    stack = ExitStack()
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'atelier.db'}"
    else:
        from atelier.store.scratch import scratch_database

        url = stack.enter_context(scratch_database(postgres_server(), prefix="atelier_cli"))
    engine = make_engine(url)
    upgrade(engine)
    monkeypatch.setenv("ATELIER_DATABASE_URL", url)
    get_settings.cache_clear()
    queue = JobQueue(engine, lease_seconds=30)
    yield queue
    queue.close()
    engine.dispose()
    stack.close()


def invoke(*args: str) -> Result:
    from atelier.cli import _register, app

    _register()
    return CliRunner().invoke(app, ["jobs", *args])


def test_list_and_show_as_text_and_json(queue: JobQueue) -> None:
    first = queue.enqueue("artwork.preview", {"artwork_id": 1})
    second = queue.enqueue("video.stylize", {"video_id": "abc"})
    claimed = queue.claim("host-a:1:w", kinds=["video.stylize"])[0]
    queue.fail(claimed.id, "host-a:1:w", "VideoError: the clip has no frames", retry=False)

    text = invoke("list")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].split()[:3] == [str(second), "video.stylize", "failed"] and "VideoError" in lines[0]
    assert lines[1].split()[:3] == [str(first), "artwork.preview", "queued"] and "#1 in line" in lines[1]

    listed = json.loads(invoke("list", "--status", "queued", "--json").stdout)
    assert [j["id"] for j in listed["jobs"]] == [first]

    shown = invoke("show", str(second), "--json")
    assert shown.exit_code == 0
    job = json.loads(shown.stdout)
    assert job["status"] == "failed" and job["payload"] == {"video_id": "abc"} and job["last_error"].startswith("VideoError")


def test_cancel_retry_priority_act_on_the_queue(queue: JobQueue) -> None:
    job_id = queue.enqueue("artwork.preview", {"artwork_id": 1})
    result = invoke("priority", str(job_id), "25")
    assert result.exit_code == 0 and result.stdout.splitlines()[0] == f"job {job_id} now has priority 25"
    assert queue.get(job_id).priority == 25  # type: ignore[union-attr]
    lowered = invoke("priority", "--json", str(job_id), "--", "-3")
    assert lowered.exit_code == 0, lowered.output
    assert json.loads(lowered.stdout)["priority"] == -3
    assert json.loads(invoke("cancel", str(job_id), "--json").stdout)["status"] == "cancelled"
    retried = invoke("retry", str(job_id))
    assert retried.exit_code == 0 and queue.get(job_id).status == "queued"  # type: ignore[union-attr]


def test_refusals_are_one_line_and_exit_2(queue: JobQueue) -> None:
    job_id = queue.enqueue("artwork.preview", {})
    not_there = invoke("show", "424242")
    assert not_there.exit_code == 2 and not_there.stderr.strip() == "error: no job 424242"
    wrong_state = invoke("retry", str(job_id))
    assert wrong_state.exit_code == 2
    assert wrong_state.stderr.strip() == f"error: job {job_id} is queued: only failed or dead or cancelled jobs can be retried"
    bad_status = invoke("list", "--status", "finished")
    assert bad_status.exit_code == 2 and "unknown status finished" in bad_status.stderr


def test_the_real_command_on_a_database_without_tables(tmp_path: Path) -> None:
    env = {**os.environ, "ATELIER_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    result = subprocess.run([*ATELIER, "jobs", "list"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert errors[0].startswith("error: cannot use the database: no such table") and "atelier db upgrade" in errors[0]
