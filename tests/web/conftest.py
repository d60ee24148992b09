"""Fixtures of the web tests: settings on a temporary data dir with the real weights, the
services and an app on them, small real photos and paintings as file bytes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from atelier.config import Settings
from atelier.service.context import Services
from atelier.web.app import create_app

from tests.service.service_fixtures import make_settings, small_jpeg
from tests.web.web_fixtures import postgres_server


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

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


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
    from tests.service.service_fixtures import smtp_server

    inbox, controller, port = smtp_server()
    yield inbox, port
    controller.stop()
