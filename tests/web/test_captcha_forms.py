"""The captcha, when on, guards uploads and commissions -- API and forms -- through the real
verification path to a loopback stand-in for the provider; it fails closed, and a solved
challenge lets the same browser (at the same address) upload again without a new one."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from atelier.service.context import Services
from atelier.web.app import create_app
from atelier.web.security import HUMAN_COOKIE
from tests.service.service_fixtures import make_settings
from tests.service.captcha_fixtures import FakeVerify
from tests.web.web_fixtures import form_token


@pytest.fixture
def fake() -> Iterator[FakeVerify]:
    server = FakeVerify()
    yield server
    server.close()


def guarded_client(tmp_path: Path, models_dir: Path, verify_url: str, **extra: object) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path,
        models_dir,
        captcha_provider="hcaptcha",
        captcha_site_key="site",
        captcha_secret="secret",
        captcha_verify_url=verify_url,
        captcha_timeout=1.0,
        trusted_proxies="10.0.0.0/8",
        **extra,
    )
    services = Services.open(settings, public_url="http://testserver")
    try:
        with TestClient(create_app(services=services, workers=0, mail=False), client=("10.0.0.1", 5000)) as client:
            yield client
    finally:
        services.close()


@pytest.fixture
def client(tmp_path: Path, models_dir: Path, fake: FakeVerify) -> Iterator[TestClient]:
    yield from guarded_client(tmp_path, models_dir, fake.url)


def upload(client: TestClient, photo: bytes, **data: str) -> object:
    return client.post("/api/v1/uploads", data=data, files={"file": ("a.jpg", photo, "image/jpeg")}, headers={"X-Forwarded-For": "198.51.100.4"})


def test_an_upload_without_the_check_is_refused(client: TestClient, fake: FakeVerify, photo_bytes: bytes) -> None:
    refused = upload(client, photo_bytes)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "captcha_failed"
    assert fake.requests == []  # nothing to ask the provider about


def test_a_solved_check_passes_and_the_browser_keeps_a_pass(client: TestClient, fake: FakeVerify, photo_bytes: bytes) -> None:
    first = upload(client, photo_bytes, **{"h-captcha-response": "solved"})
    assert first.status_code == 201
    assert fake.requests == [{"secret": ["secret"], "response": ["solved"], "remoteip": ["198.51.100.4"]}]
    assert HUMAN_COOKIE in first.headers["set-cookie"]
    assert upload(client, photo_bytes).status_code == 201  # the pass, not a new challenge
    assert len(fake.requests) == 1
    # The pass is bound to the address it was earned from.
    moved = client.post("/api/v1/uploads", files={"file": ("a.jpg", photo_bytes, "image/jpeg")}, headers={"X-Forwarded-For": "203.0.113.99"})
    assert moved.status_code == 403


def test_a_refused_token_is_refused(client: TestClient, fake: FakeVerify, photo_bytes: bytes) -> None:
    fake.answer = {"success": False, "error-codes": ["invalid-input-response"]}
    assert upload(client, photo_bytes, captcha_token="forged").status_code == 403


def test_the_commission_form_explains_in_the_page_language(client: TestClient) -> None:
    page = client.get("/es/")
    assert 'class="h-captcha captcha" data-sitekey="site"' in page.text
    refused = client.post("/es/commission", data={"csrf_token": form_token(client, "/es/"), "email": "a@example.com", "style": "x"})
    assert refused.status_code == 403 and "no eres un robot" in refused.text


def test_an_unreachable_provider_refuses_with_503(tmp_path: Path, models_dir: Path, photo_bytes: bytes) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gen = guarded_client(tmp_path, models_dir, f"http://127.0.0.1:{port}/siteverify")
    client = next(gen)
    try:
        refused = upload(client, photo_bytes, **{"h-captcha-response": "solved"})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "captcha_unavailable"
        assert "retry-after" in refused.headers
        assert client.get("/healthz").status_code == 200
    finally:
        gen.close()


def test_a_direct_upload_carries_the_check_in_a_header(client: TestClient, fake: FakeVerify) -> None:
    """The pages' direct uploads (static/js/direct-upload.js) ask for their policy with a JSON
    body, so the widget's answer travels in X-Captcha-Token; the pass it earns covers the form
    that then names the upload."""
    ask = lambda **headers: client.post(  # noqa: E731
        "/api/v1/uploads/presign", json={"content_type": "image/jpeg"}, headers={"X-Forwarded-For": "198.51.100.4", **headers}
    )
    refused = ask()
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "captcha_failed"
    granted = ask(**{"X-Captcha-Token": "solved"})
    assert granted.status_code == 201 and HUMAN_COOKIE in granted.headers["set-cookie"]
    assert fake.requests[-1]["response"] == ["solved"]
    assert ask().status_code == 201  # the pass
