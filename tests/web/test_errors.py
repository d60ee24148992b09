"""Outages as answers: a database or a store that is away is a 503 with Retry-After -- JSON for
the API, a page in the visitor's language for a browser -- never a 500. (The same with real
processes and a real outage: tests/faults/.)"""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import InterfaceError, OperationalError

from atelier.service.context import Services
from atelier.store.errors import StorageUnavailableError
from atelier.web import errors
from atelier.web.app import create_app


def _app(services: Services, exc: Exception) -> FastAPI:
    """The real app with two routes in front that fail with ``exc``: one of the API, one page."""
    app = create_app(services=services, workers=0, mail=False)

    def thing() -> None:
        raise exc

    app.add_api_route("/api/v1/thing", thing)
    app.add_api_route("/{lang}/thing", thing)
    app.router.routes[:] = app.router.routes[-2:] + app.router.routes[:-2]
    return app


REFUSED = OperationalError("SELECT 1", {}, Exception("connection refused"))
CLOSED = InterfaceError("SELECT 1", {}, Exception("the connection is closed"))


@pytest.mark.parametrize("exc", [REFUSED, CLOSED], ids=["refused", "closed"])
def test_a_database_that_is_away_is_a_503_with_retry_after_for_the_api(services: Services, exc: Exception) -> None:
    with TestClient(_app(services, exc), raise_server_exceptions=False) as client:
        response = client.get("/api/v1/thing", headers={"Accept": "text/html"})  # the API stays JSON
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(errors.DATABASE_RETRY_AFTER)
    assert response.json()["error"]["code"] == "unavailable"


def test_a_browser_gets_a_page_in_its_language(services: Services) -> None:
    with TestClient(_app(services, REFUSED), raise_server_exceptions=False) as client:
        spanish = client.get("/es/thing", headers={"Accept": "text/html"})
        english = client.get("/en/thing", headers={"Accept": "text/html,application/xhtml+xml"})
        script = client.get("/en/thing", headers={"Accept": "application/json"})
    assert spanish.status_code == english.status_code == 503
    assert spanish.headers["content-type"].startswith("text/html") and "Volvemos enseguida" in spanish.text
    assert spanish.headers["Retry-After"] == str(errors.DATABASE_RETRY_AFTER)
    assert "Back in a moment" in english.text
    assert script.status_code == 503 and script.json()["error"]["code"] == "unavailable"


def test_an_unreachable_store_is_a_503_too(services: Services) -> None:
    with TestClient(_app(services, StorageUnavailableError("cannot reach the storage")), raise_server_exceptions=False) as client:
        api = client.get("/api/v1/thing")
        page = client.get("/es/thing", headers={"Accept": "text/html"})
    assert api.status_code == 503 and api.json()["error"]["code"] == "store_error"
    assert api.headers["Retry-After"] == str(errors.STORAGE_RETRY_AFTER)
    assert page.status_code == 503 and "Volvemos enseguida" in page.text


def test_an_unexpected_error_on_a_page_is_a_page_not_json(services: Services) -> None:
    with TestClient(_app(services, RuntimeError("a bug")), raise_server_exceptions=False) as client:
        page = client.get("/es/thing", headers={"Accept": "text/html"})
        api = client.get("/api/v1/thing", headers={"Accept": "text/html"})
    assert page.status_code == 500 and page.headers["content-type"].startswith("text/html")
    assert "Algo ha fallado" in page.text and "a bug" not in page.text
    assert api.status_code == 500 and api.json()["error"]["code"] == "internal"


def test_a_damaged_database_file_is_a_503_and_readiness_hears_of_it_at_once(services: Services) -> None:
    import sqlite3

    from sqlalchemy.exc import DatabaseError

    malformed = sqlite3.DatabaseError("database disk image is malformed")
    damaged = DatabaseError("SELECT * FROM artworks", {}, malformed)
    with TestClient(_app(services, damaged), raise_server_exceptions=False) as client:
        assert client.get("/readyz").status_code == 200
        api = client.get("/api/v1/thing")
        page = client.get("/en/thing", headers={"Accept": "text/html"})
        ready = client.get("/readyz")
    assert api.status_code == 503 and api.json()["error"]["code"] == "unavailable"
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("damaged: database disk image is malformed")
