"""Fixtures of the store tests: one database per backend (SQLite and a real PostgreSQL), queues
on them, and an S3 API server (moto) on a free loopback port.

PostgreSQL: ``ATELIER_TEST_POSTGRES_URL`` names the server (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); each test session creates its own
database there (``atelier_test_<random>``) and drops it at the end. A server that cannot be
reached FAILS the PostgreSQL cases with a message saying so; ``ATELIER_TEST_SKIP_POSTGRES=1``
skips them instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData

from atelier.store.db import Base, make_engine
from atelier.store.migrations import upgrade
from atelier.store.queue import JobQueue
from tests.store.s3_server import PolicyEnforcingMotoServer
from tests.store.store_fixtures import BACKENDS, S3_CREDENTIALS, free_port

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SKIP_POSTGRES = os.environ.get("ATELIER_TEST_SKIP_POSTGRES") == "1"

def postgres_server_url() -> str:
    return os.environ.get("ATELIER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES


_postgres_problem: str | None = None
_postgres_checked = False


def require_postgres() -> str:
    """The server URL, or fail (skip, with ATELIER_TEST_SKIP_POSTGRES=1) saying why not."""
    global _postgres_problem, _postgres_checked
    if SKIP_POSTGRES:
        pytest.skip("PostgreSQL tests skipped: ATELIER_TEST_SKIP_POSTGRES=1")
    url = postgres_server_url()
    if not _postgres_checked:
        _postgres_checked = True
        try:
            import psycopg
            from sqlalchemy.engine import make_url

            conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(conninfo, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            _postgres_problem = f"{type(exc).__name__}: {exc}".strip()
    if _postgres_problem:
        pytest.fail(
            f"PostgreSQL is not available at {url} ({_postgres_problem}). The store tests need "
            "a real server: start one, point ATELIER_TEST_POSTGRES_URL at it, or set "
            "ATELIER_TEST_SKIP_POSTGRES=1 to skip these tests.",
            pytrace=False,
        )
    return url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated database of this test session on the PostgreSQL server, dropped at the end."""
    from atelier.store.scratch import create_database, drop_database

    server = require_postgres()
    url = create_database(server, prefix="atelier_test")
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    drop_database(url, via=server)


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """An empty (not migrated) PostgreSQL database of this test alone."""
    from atelier.store.scratch import scratch_database

    with scratch_database(require_postgres(), prefix="atelier_test") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated once; each test gets a copy (quicker than migrating again)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "atelier.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    assert not path.with_name("atelier.db-wal").exists()
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a fresh SQLite file, or the session's PostgreSQL database
    emptied before the test."""
    if request.param == "sqlite":
        path = tmp_path / "atelier.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    _empty(engine, Base.metadata)
    engine.dispose()
    yield url


def _empty(engine: Engine, metadata: MetaData) -> None:
    names = ", ".join(table.name for table in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def backend(engine: Engine) -> str:
    return engine.dialect.name


@pytest.fixture
def queue(engine: Engine) -> Iterator[JobQueue]:
    queue = JobQueue(engine, lease_seconds=30, poll_interval=0.1)
    yield queue
    queue.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, behind a layer that enforces POST policies and
    presigned-link expiry the way AWS documents them (moto itself checks neither)."""
    server = PolicyEnforcingMotoServer(
        ip_address="127.0.0.1",
        port=free_port(),
        secret_access_key=S3_CREDENTIALS["secret_access_key"],
    )
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
