"""The commission API over HTTP (in process): order, status, the event stream while a worker
paints, the intermediate picture, the preview behind the token."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from atelier.service.context import Services
from atelier.service.worker import Worker
from atelier.store.db import Artwork, transaction

from tests.service.service_fixtures import install_test_style, microast_painter


def _order(client: TestClient, photo: bytes, **data: str):  # type: ignore[no-untyped-def]
    form = {"style_name": "starry-night", "email": "ana@example.com"} | data
    return client.post("/api/v1/artworks", data=form, files={"content": ("dog.jpg", photo, "image/jpeg")})


def test_ordering_answers_201_with_where_to_follow_it(
    client: TestClient, services: Services, style_dir: Path, photo_bytes: bytes
) -> None:
    install_test_style(services, style_dir)
    response = _order(client, photo_bytes, locale="es")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "queued" and body["position"] == 1
    assert body["status_url"] == f"/api/v1/artworks/{body['id']}"
    assert body["style_title"] == "La noche estrellada"
    status = client.get(body["status_url"]).json()
    assert status["id"] == body["id"] and status["status"] == "queued"
    assert client.get("/api/v1/artworks/" + "0" * 32).status_code == 404


def test_an_order_with_a_bad_email_or_style_is_refused(
    client: TestClient, services: Services, style_dir: Path, photo_bytes: bytes
) -> None:
    install_test_style(services, style_dir)
    bad_email = _order(client, photo_bytes, email="nope")
    assert bad_email.status_code == 422 and "email" in bad_email.json()["error"]["message"]
    assert _order(client, photo_bytes, style_name="candy").status_code == 422


def test_events_stream_progress_until_the_preview_is_ready(
    client: TestClient, services: Services, style_dir: Path, photo_bytes: bytes
) -> None:
    install_test_style(services, style_dir)
    services.painter = microast_painter(services, steps=3, delay=0.4)
    body = _order(client, photo_bytes).json()
    stop = threading.Event()
    worker = Worker(services, worker_id="web-test", idle_wait=0.2)
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    events: list[tuple[str, dict]] = []
    try:
        with client.stream("GET", body["events_url"]) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name or "message", json.loads(line[6:])))
                    # The worker starts once the stream has said where the order stands, so the
                    # first event is the queued one however fast the worker claims the job.
                    if len(events) == 1:
                        thread.start()
                    if name == "done":
                        break
    finally:
        stop.set()
        thread.join(10)
    statuses = [data["status"] for _, data in events]
    assert statuses[0] == "queued" and statuses[-1] == "preview_ready"
    assert events[-1][0] == "done"
    painting = [data for _, data in events if data["status"] == "painting"]
    assert painting, statuses
    progress = [data["progress"] for data in painting]
    assert progress == sorted(progress)
    with_picture = [d for d in painting if d["progress_image_url"]]
    assert with_picture
    picture = client.get(with_picture[-1]["progress_image_url"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"


def test_the_preview_behind_the_token_is_the_stored_picture(
    client: TestClient, services: Services, style_dir: Path, photo_bytes: bytes
) -> None:
    install_test_style(services, style_dir)
    services.painter = microast_painter(services, steps=1)
    _order(client, photo_bytes)
    assert Worker(services, worker_id="w").run_once() == "done"
    with transaction(services.engine, read_only=True) as session:
        artwork = session.scalars(select(Artwork)).one()
    response = client.get(f"/a/{artwork.preview_token}/preview.jpg")
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (96, 72)
    assert response.content == services.blobs.read(artwork.preview_key or "")
    assert client.get(f"/a/{artwork.download_token}/preview.jpg").status_code == 404
