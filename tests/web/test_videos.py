"""Videos: a queued job that paints every frame, a status to follow, a link to the clip, a mail."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from atelier.service.context import Services
from atelier.service.worker import Worker
from atelier.store.db import OutboxEmail, transaction

from tests.service.service_fixtures import tiny_clip
from tests.web.web_fixtures import form_token


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, content_dir: Path) -> bytes:
    return tiny_clip(tmp_path_factory.mktemp("clip") / "pan.mp4", content_dir / "dog.jpg").read_bytes()


def test_a_video_is_queued_painted_and_linked(client: TestClient, services: Services, clip: bytes) -> None:
    response = client.post(
        "/api/v1/videos",
        data={"style_name": "mosaic", "email": "ana@example.com", "locale": "es", "size": "96"},
        files={"content": ("pan.mp4", clip, "video/mp4")},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and len(body["id"]) == 32 and body["result_url"] is None
    waiting = client.get(body["status_url"], headers={"Accept-Language": "es"}).json()
    assert (waiting["stage"], waiting["position"], waiting["stage_text"]) == ("queued", 1, "En espera: es el siguiente")
    assert waiting["eta_seconds"] is not None and waiting["eta_seconds"] > 0  # a first guess, before any video was painted
    assert Worker(services, worker_id="w").run_once() == "done"
    done = client.get(body["status_url"]).json()
    assert done["status"] == "done" and done["progress"] == 1.0
    assert (done["stage"], done["stage_text"], done["eta_seconds"]) == ("done", "Done", 0)
    video = client.get(done["result_url"].removeprefix("http://testserver"))
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (96, 64)
        assert sum(1 for _ in container.decode(stream)) == 8
    with transaction(services.engine, read_only=True) as session:
        mail = session.scalars(select(OutboxEmail)).one()
    assert mail.subject == "Tu video está listo" and "/blobs/videos/" in mail.text_body


def test_a_video_with_an_unknown_style_or_no_clip_is_refused(client: TestClient, clip: bytes, photo_bytes: bytes) -> None:
    bad_style = client.post("/api/v1/videos", data={"style_name": "nope"}, files={"content": ("pan.mp4", clip, "video/mp4")})
    assert bad_style.status_code == 422
    not_a_clip = client.post("/api/v1/videos", data={"style_name": "candy"}, files={"content": ("dog.mp4", photo_bytes, "video/mp4")})
    assert not_a_clip.status_code == 422 and "video" in not_a_clip.json()["error"]["message"]
    assert client.get("/api/v1/videos/" + "0" * 32).status_code == 404


def test_the_home_form_takes_a_clip_without_javascript(client: TestClient, services: Services, clip: bytes) -> None:
    response = client.post(
        "/en/instant", data={"csrf_token": form_token(client), "style": "candy"}, files={"photo": ("pan.mp4", clip, "video/mp4")}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"].startswith("/en/videos/")
    page = client.get(response.headers["location"])
    assert page.status_code == 200 and "Waiting for a free painter" in page.text
    assert 'http-equiv="refresh"' in page.text
