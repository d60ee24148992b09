"""`atelier db upgrade`, `atelier reconcile` and `atelier bench queue`, run as the user runs them.

(These test src/atelier/cli/store.py; they live here with the store's fixtures.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import inspect
from typer.testing import CliRunner

from atelier.store.bench import bench_queue
from atelier.store.blobs import LocalBlobStore, new_key
from atelier.store.db import Base, make_engine
from atelier.store.migrations import head_revision, upgrade
from tests.store.store_fixtures import BACKENDS

ATELIER = [sys.executable, "-c", "from atelier.cli import main; main()"]


def _atelier(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real command, in a process of its own."""
    return subprocess.run([*ATELIER, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


def _invoke(monkeypatch: pytest.MonkeyPatch, *args: str, env: dict[str, str]) -> Result:
    """The same command, in this process (quicker: no second start-up)."""
    import atelier.cli.store  # noqa: F401  (registers the commands)
    from atelier.cli import app
    from atelier.config import get_settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return CliRunner().invoke(app, list(args))


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'atelier.db'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


def test_db_upgrade_creates_the_tables_and_is_safe_to_run_again(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"ATELIER_DATABASE_URL": empty_database_url}
    first = _atelier("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert f"empty -> {head_revision()}" in first.stdout
    second = _invoke(monkeypatch, "db", "upgrade", env=env)
    assert second.exit_code == 0 and f"already at {head_revision()}" in second.stdout
    current = _invoke(monkeypatch, "db", "current", env=env)
    assert "up to date" in current.stdout
    engine = make_engine(empty_database_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_db_check_summarises_a_whole_database_and_exits_0(empty_database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"ATELIER_DATABASE_URL": empty_database_url}
    assert _invoke(monkeypatch, "db", "upgrade", env=env).exit_code == 0
    result = _invoke(monkeypatch, "db", "check", env=env)
    assert result.exit_code == 0, result.stdout
    assert f"schema revision: {head_revision()} (up to date)" in result.stdout
    assert "artworks: 0 rows" in result.stdout and "jobs: 0 rows" in result.stdout
    if empty_database_url.startswith("sqlite"):
        assert "integrity: ok" in result.stdout and "page_count" in result.stdout
    else:
        assert "integrity: not checked here" in result.stdout


def test_db_upgrade_on_an_unreachable_database_says_so_in_one_line() -> None:
    result = _atelier("db", "upgrade", env={"ATELIER_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot use the database") and "Traceback" not in result.stderr


def test_reconcile_reports_and_fixes_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    env = {"ATELIER_DATA_DIR": str(data)}
    assert _invoke(monkeypatch, "db", "upgrade", env=env).exit_code == 0
    blobs = LocalBlobStore(data / "blobs")
    orphan = new_key("uploads", ".jpg")
    blobs.put(orphan, b"x", content_type="image/jpeg")
    old = time.time() - 7200
    os.utime(blobs.path(orphan), (old, old))

    report = _atelier("reconcile", env=env)
    assert report.returncode == 0, report.stderr
    assert "orphan blobs: 1" in report.stdout and orphan in report.stdout
    assert "run again with --fix" in report.stdout
    assert blobs.exists(orphan)

    as_json = json.loads(_invoke(monkeypatch, "reconcile", "--json", env=env).stdout)
    assert [b["key"] for b in as_json["orphan_blobs"]] == [orphan] and as_json["clean"] is False

    fixed = _invoke(monkeypatch, "reconcile", "--fix", env=env)
    assert fixed.exit_code == 0 and f"deleted orphan blob {orphan}" in fixed.stdout
    assert not blobs.exists(orphan)
    assert json.loads(_invoke(monkeypatch, "reconcile", "--json", env=env).stdout)["clean"] is True


def test_bench_queue_measures_claims_per_second(database_url: str) -> None:
    results = bench_queue(database_url, worker_counts=(2,), jobs=60)
    assert [(r.workers, r.jobs) for r in results] == [(2, 60)]
    assert all(r.seconds > 0 and r.claims_per_second > 0 for r in results)
    engine = make_engine(database_url)
    upgrade(engine)
    with engine.connect() as conn:  # it cleans up after itself
        assert conn.exec_driver_sql("SELECT count(*) FROM jobs").scalar() == 0
    engine.dispose()


def test_bench_queue_command_prints_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _invoke(monkeypatch, "bench", "queue", "--workers", "1", "--jobs", "20", "--json", env={"ATELIER_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["backend"], row["workers"], row["jobs"]) == ("sqlite", 1, 20)
    assert row["claims_per_second"] > 0
