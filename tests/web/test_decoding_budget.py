"""No room in the decoding budget, as the web app answers it: 503 with Retry-After on the API,
the "back in a moment" page on the forms (service/decoding.py; tests/service/test_decoding.py)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from atelier.service.context import Services
from atelier.web.app import create_app


def test_no_room_is_a_503_with_retry_after_on_the_api_and_a_page_on_the_forms(services: Services, photo_bytes: bytes) -> None:
    services.settings.decode_wait_seconds = 0
    with TestClient(create_app(services=services, workers=0, mail=False)) as client:
        with services.decode_budget.reserve(services.decode_budget.budget):  # someone else is decoding
            api = client.post("/api/v1/uploads", files={"file": ("a.jpg", photo_bytes, "image/jpeg")})
            page = client.get("/en/")
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            form = client.post("/en/instant", data={"csrf_token": token, "style": "candy"}, files={"photo": ("a.jpg", photo_bytes, "image/jpeg")}, headers={"Accept": "text/html"})
        after = client.post("/api/v1/uploads", files={"file": ("a.jpg", photo_bytes, "image/jpeg")})
    assert api.status_code == 503 and api.json()["error"]["code"] == "busy" and int(api.headers["Retry-After"]) > 0
    assert form.status_code == 503 and form.headers["content-type"].startswith("text/html") and "Back in a moment" in form.text
    assert after.status_code == 201
