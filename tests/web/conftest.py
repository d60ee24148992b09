"""Fixtures of the web tests: settings on a temporary data dir with the real weights, the
services and an app on them, small real photos and paintings as file bytes."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from atelier.config import Settings
from atelier.service.context import Services
from atelier.web.app import create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from service_fixtures import make_settings, small_jpeg  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path, models_dir: Path) -> Settings:
    return make_settings(tmp_path, models_dir)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    services = Services.open(settings, public_url="http://testserver")
    yield services
    services.close()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    app = create_app(services=services, workers=0, mail=False)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="session")
def photo_bytes(content_dir: Path) -> bytes:
    """dog.jpg at 160x120: a real photo, small enough to paint in a blink."""
    return small_jpeg(content_dir / "dog.jpg", 160)


@pytest.fixture(scope="session")
def other_photo_bytes(content_dir: Path) -> bytes:
    return small_jpeg(content_dir / "golden_gate.jpg", 128)


@pytest.fixture(scope="session")
def painting_bytes(style_dir: Path) -> bytes:
    return small_jpeg(style_dir / "starry_night.jpg", 256)


def open_image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


# ------------------------------------------------------------------------------------------------
# PostgreSQL, a live server, SMTP

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def postgres_server() -> str:
    """The PostgreSQL server the tests use, or fail (skip with ATELIER_TEST_SKIP_POSTGRES=1)
    saying why it cannot be reached -- as the store tests do."""
    import os

    if os.environ.get("ATELIER_TEST_SKIP_POSTGRES") == "1":
        pytest.skip("PostgreSQL tests skipped: ATELIER_TEST_SKIP_POSTGRES=1")
    url = os.environ.get("ATELIER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL is not available at {url} ({exc}); start one or set ATELIER_TEST_SKIP_POSTGRES=1", pytrace=False)
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: an SQLite file, or a scratch PostgreSQL database of this test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'atelier.db'}"
        return
    from atelier.store.scratch import scratch_database

    with scratch_database(postgres_server(), prefix="atelier_web") as url:
        yield url


@pytest.fixture
def smtp() -> Iterator[tuple]:
    from service_fixtures import smtp_server

    inbox, controller, port = smtp_server()
    yield inbox, port
    controller.stop()


class LiveServer:
    """The app served by uvicorn on a free loopback port, in a thread of this process."""

    def __init__(self, app, port: int) -> None:  # type: ignore[no-untyped-def]
        import threading

        import uvicorn

        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="live-server", daemon=True)

    def __enter__(self) -> LiveServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)
