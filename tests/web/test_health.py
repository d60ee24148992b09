"""Operations endpoints: liveness, readiness, Prometheus metrics, stats, OpenAPI."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from atelier.service.context import Services
from atelier.web.app import create_app

from tests.service.service_fixtures import make_settings


def test_healthz_answers_ok(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_checks_database_storage_and_weights(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["database"] == checks["storage"] == checks["weights"] == "ok"


def test_readyz_is_503_without_weights_and_names_the_command(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", tmp_path / "no-models")
    services = Services.open(settings)
    try:
        with TestClient(create_app(services=services, workers=0, mail=False)) as client:
            response = client.get("/readyz")
        assert response.status_code == 503
        assert "atelier models" in response.json()["checks"]["weights"]
        assert response.headers["Retry-After"]
    finally:
        services.close()


def test_a_fresh_data_dir_gets_its_database_on_first_start(tmp_path: Path, models_dir: Path) -> None:
    settings = make_settings(tmp_path / "fresh", models_dir)
    assert not (tmp_path / "fresh" / "atelier.db").exists()
    with TestClient(create_app(settings, workers=0, mail=False)) as client:
        assert client.get("/readyz").status_code == 200
    assert (tmp_path / "fresh" / "atelier.db").is_file()
    assert (tmp_path / "fresh" / "secret.key").stat().st_mode & 0o077 == 0


def test_metrics_and_stats_count_stylize_calls(client: TestClient, photo_bytes: bytes) -> None:
    for style in ("candy", "mosaic"):
        response = client.post(
            "/api/v1/stylize", files={"content": ("dog.jpg", photo_bytes, "image/jpeg")}, data={"style_name": style}
        )
        assert response.status_code == 200
    stats = client.get("/api/v1/stats").json()
    assert stats["stylize"]["calls"] == 2
    assert stats["stylize"]["latency_ms"]["window"] == 2
    assert stats["stylize"]["latency_ms"]["mean"] > 0
    assert stats["queue"]["by_status"]["queued"] == 0
    text = client.get("/metrics").text
    assert 'atelier_http_request_seconds_count{method="POST",route="/api/v1/stylize",status="2xx"} 2.0' in text
    assert 'atelier_stylize_seconds_count{engine="filter"} 2.0' in text
    assert "atelier_batch_size_bucket" in text
    assert "atelier_model_seconds_count" in text


def test_every_answer_carries_a_strict_content_security_policy(client: TestClient) -> None:
    response = client.get("/healthz")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"


def test_openapi_documents_the_instant_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/stylize", "/api/v1/uploads", "/api/v1/uploads/presign", "/api/v1/styles", "/api/v1/stats"):
        assert path in paths
    assert client.get("/docs").status_code == 200
