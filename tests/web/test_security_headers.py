"""Security headers on every answer; a CSP without inline script or style (and templates that need
none); HSTS over HTTPS; the captcha widens the CSP only for its own origins; ids are random and
unknown ones all answer the same 404."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from atelier.service.context import Services
from atelier.web.app import create_app
from atelier.web.templating import TEMPLATES_DIR
from tests.service.service_fixtures import make_settings

EXPECTED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


@pytest.mark.parametrize("path", ["/en/", "/es/commission", "/api/v1/styles", "/nope", "/api/v1/uploads/x/image"])
def test_every_answer_has_the_security_headers(client: TestClient, path: str) -> None:
    answer = client.get(path)
    for name, value in EXPECTED.items():
        assert answer.headers[name] == value, (path, name)
    csp = answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "camera=()" in answer.headers["permissions-policy"]
    assert "strict-transport-security" not in answer.headers  # plain http: HSTS would be a lie


def test_the_templates_need_no_inline_script_or_style() -> None:
    for template in TEMPLATES_DIR.glob("*.html"):
        text = re.sub(r"{%.*?%}|{{.*?}}", "", template.read_text(), flags=re.S)  # Jinja's own syntax
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template.name
        assert "<style" not in text and not re.search(r"<[a-zA-Z][^>]*\sstyle=", text), template.name
        assert not re.search(r"<[a-zA-Z][^>]*\son[a-z]+=", text), template.name  # no onclick=...


def test_hsts_over_https(tmp_path: Path, models_dir: Path) -> None:
    settings = make_settings(tmp_path, models_dir, public_url="https://atelier.example.com")
    services = Services.open(settings, public_url="https://atelier.example.com")
    try:
        with TestClient(create_app(services=services, workers=0, mail=False), base_url="https://atelier.example.com") as client:
            page = client.get("/en/")
            assert page.headers["strict-transport-security"].startswith("max-age=31536000")
            assert "secure" in page.headers["set-cookie"].lower()  # the CSRF cookie too
    finally:
        services.close()


def test_an_enabled_captcha_adds_its_widget_and_only_its_origin(tmp_path: Path, models_dir: Path) -> None:
    settings = make_settings(tmp_path, models_dir, captcha_provider="turnstile", captcha_site_key="site-1", captcha_secret="s")
    services = Services.open(settings, public_url="http://testserver")
    try:
        with TestClient(create_app(services=services, workers=0, mail=False)) as client:
            page = client.get("/en/")
            assert 'class="cf-turnstile captcha" data-sitekey="site-1"' in page.text
            assert '<script src="https://challenges.cloudflare.com/turnstile/v0/api.js"' in page.text
            csp = page.headers["content-security-policy"]
            assert "script-src 'self' https://challenges.cloudflare.com" in csp
            assert "frame-src https://challenges.cloudflare.com" in csp and "google" not in csp
    finally:
        services.close()


def test_ids_are_random_and_unknown_ones_answer_alike(client: TestClient, photo_bytes: bytes) -> None:
    ids = [client.post("/api/v1/uploads", files={"file": ("a.jpg", photo_bytes, "image/jpeg")}).json()["id"] for _ in range(2)]
    for upload_id in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", upload_id)
    assert ids[0] != ids[1] and abs(int(ids[0], 16) - int(ids[1], 16)) > 2**64  # not a counter
    # Unknown, malformed and well-formed-but-absent ids: the same 404, whatever the route.
    answers = [
        client.get("/api/v1/artworks/" + "0" * 32),
        client.get("/api/v1/artworks/1"),
        client.get("/api/v1/videos/" + "f" * 32),
        client.get("/api/v1/uploads/" + "0" * 32 + "/image"),
        client.get("/api/v1/uploads/../etc/image"),
        client.get("/a/" + "x" * 32 + "/preview.jpg"),
    ]
    for answer in answers:
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", answer.url
