"""End to end through HTTP, on SQLite and on PostgreSQL: a real server on loopback with a worker
inside it, the real weights, a real SMTP server.

upload -> stylize -> re-pick a style with content_id (the photo comes from the cache) ->
commission -> the worker paints with the catalog's Gatys recipe (tiny here) -> the mail arrives
-> its link opens the preview page -> the picture behind it is the watermarked preview.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from atelier.web.app import create_app

from tests.web.web_fixtures import LiveServer
from tests.service.service_fixtures import add_catalog_style, free_port, link_in, make_settings, small_jpeg

pytestmark = pytest.mark.slow


def _crop(path: Path, box: tuple[int, int, int, int], longest: int = 192) -> bytes:
    with Image.open(path) as image:
        piece = image.convert("RGB").crop(box)
        piece.thumbnail((longest, longest))
        out = io.BytesIO()
        piece.save(out, "JPEG", quality=90)
        return out.getvalue()


def test_instant_and_commission_end_to_end(
    database_url: str,
    smtp: tuple,
    tmp_path: Path,
    models_dir: Path,
    content_dir: Path,
    style_dir: Path,
) -> None:
    inbox, smtp_port = smtp
    port = free_port()
    settings = make_settings(
        tmp_path / "data",
        models_dir,
        database_url=database_url,
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        public_url=f"http://127.0.0.1:{port}",
        preview_max_size=96,
        workers=1,
    )
    add_catalog_style(settings, style_dir, passes="48x4,96x4")
    app = create_app(settings, workers=1)
    with LiveServer(app, port) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        assert http.get("/readyz").status_code == 200
        styles = {s["name"]: s for s in http.get("/api/v1/styles").json()["styles"]}
        assert styles["starry_night"]["commission"] is True

        # Warm up: load the engine and encode both styles, so the timings below compare the
        # photo's handling alone.
        own = http.post("/api/v1/uploads", data={"kind": "style"}, files={"file": ("muse.jpg", small_jpeg(style_dir / "la_muse.jpg", 384), "image/jpeg")}).json()
        warm = _crop(content_dir / "kite.jpg", (0, 0, 900, 900))
        for style in ({"style_name": "starry_night"}, {"style_id": own["id"]}):
            assert http.post("/api/v1/stylize", data=style, files={"content": ("w.jpg", warm, "image/jpeg")}).status_code == 200

        # How much faster a re-pick is, is measured by `atelier bench service` (first stylize vs
        # re-pick), not asserted here: on a busy machine two timings can come out either way.
        photos = [_crop(content_dir / "dog.jpg", (i * 40, i * 30, 640 + i * 40, 480 + i * 30)) for i in range(3)]
        for photo in photos:
            response = http.post("/api/v1/stylize", data={"style_name": "starry_night"}, files={"content": ("dog.jpg", photo, "image/jpeg")})
            assert response.status_code == 200, response.text
            assert response.headers["X-Content-Cached"] == "0"
            content_id = response.headers["X-Content-Id"]
            again = http.get("/api/v1/stylize", params={"content_id": content_id, "style_id": own["id"]})
            assert again.status_code == 200 and again.headers["X-Content-Cached"] == "1"
            assert Image.open(io.BytesIO(again.content)).size == Image.open(io.BytesIO(response.content)).size

        # The commission: order, follow, mail, link, preview.
        order = http.post(
            "/api/v1/artworks",
            data={"content_id": content_id, "style_name": "starry_night", "email": "ana@example.com", "locale": "es"},
        )
        assert order.status_code == 201, order.text
        status_url = order.json()["status_url"]
        deadline = time.monotonic() + 300
        seen = set()
        while True:
            state = http.get(status_url).json()
            seen.add(state["status"])
            if state["status"] in ("preview_ready", "failed"):
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
        assert state["status"] == "preview_ready", state
        message = inbox.wait_for(1)[0]
        assert message["To"] == "ana@example.com" and message["Subject"] == "Tu obra está lista"
        assert message.get_body(("html",)) is not None
        link = link_in(message)
        assert link.startswith(f"{server.url}/es/a/")
        page = http.get(link.removeprefix(server.url))
        assert page.status_code == 200 and "La noche estrellada" in page.text
        image_url = re.search(r'<img src="(/a/[^"]+/preview\.jpg)"', page.text)
        assert image_url is not None
        preview = http.get(image_url.group(1))
        assert preview.status_code == 200
        picture = Image.open(io.BytesIO(preview.content))
        assert max(picture.size) == 96
