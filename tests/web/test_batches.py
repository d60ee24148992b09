"""`POST /api/v1/batches`: many photos, one or more styles, one picture per pair -- inline when
small, a job otherwise -- within the size and rate limits."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from atelier.service.context import Services
from atelier.service.worker import Worker
from atelier.store.db import Job, Upload, transaction
from atelier.web.app import create_app
from tests.service.service_fixtures import make_settings, small_jpeg


def _psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("RGB"), dtype=np.float64)
    y = np.asarray(b.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _counts(services: Services) -> tuple[int, int]:
    with transaction(services.engine, read_only=True) as session:
        return session.scalar(select(func.count()).select_from(Upload)), session.scalar(select(func.count()).select_from(Job))


@pytest.fixture(scope="module")
def photos(content_dir: Path) -> list[bytes]:
    return [small_jpeg(content_dir / name, 96) for name in ("dog.jpg", "golden_gate.jpg", "chicago.jpg")]


def test_a_small_batch_comes_back_inline_one_picture_per_pair(
    client: TestClient, photos: list[bytes], painting_bytes: bytes
) -> None:
    response = client.post(
        "/api/v1/batches",
        data={"style_name": ["candy"], "format": "png"},
        files=[("content", ("dog.jpg", photos[0], "image/jpeg")), ("content", ("gg.jpg", photos[1], "image/jpeg")),
               ("style", ("starry.jpg", painting_bytes, "image/jpeg"))],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "done" and body["pairs"] == 4
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    # photo-major: both styles of the first photo, then of the second
    assert results[0]["content_id"] == results[1]["content_id"] != results[2]["content_id"] == results[3]["content_id"]
    assert [r["style"] for r in results[:2]][0] == "candy" and results[1]["style"].startswith("upload:")
    for result in results:
        image = Image.open(io.BytesIO(base64.b64decode(result["image_base64"])))
        assert image.format == "PNG" and image.size == (result["width"], result["height"])
        assert result["content_type"] == "image/png"
    # each picture is the one the single-picture API paints for the same pair
    alone = client.get("/api/v1/stylize", params={"content_id": results[3]["content_id"], "style_id": results[3]["style"].removeprefix("upload:"), "format": "png"})
    assert alone.status_code == 200
    batched = Image.open(io.BytesIO(base64.b64decode(results[3]["image_base64"])))
    assert _psnr(batched, Image.open(io.BytesIO(alone.content))) > 40


def test_a_bigger_batch_is_a_job_with_every_result_linked(
    client: TestClient, services: Services, photos: list[bytes]
) -> None:
    uploaded = client.post("/api/v1/uploads", files={"file": ("c.jpg", photos[2], "image/jpeg")}).json()["id"]
    response = client.post(
        "/api/v1/batches",
        data={"style_name": ["candy", "mosaic"], "content_id": [uploaded], "size": "64"},
        files=[("content", ("dog.jpg", photos[0], "image/jpeg")), ("content", ("gg.jpg", photos[1], "image/jpeg"))],
    )
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["status"] == "queued" and queued["pairs"] == 6 and queued["done"] == 0
    assert response.headers["location"] == queued["status_url"]
    assert all(r["url"] is None for r in queued["results"])
    assert Worker(services, worker_id="w").run_once() == "done"
    done = client.get(queued["status_url"]).json()
    assert done["status"] == "done" and done["progress"] == 1.0 and done["done"] == 6
    assert [r["style"] for r in done["results"]] == ["candy", "mosaic"] * 3
    assert done["results"][4]["content_id"] == uploaded
    for result in done["results"]:
        picture = client.get(result["url"].removeprefix("http://testserver"))
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(picture.content))
        assert max(image.size) == 64 and image.size == (result["width"], result["height"])
    assert client.get("/api/v1/batches/" + "0" * 32).status_code == 404


def test_respond_job_queues_even_a_small_batch(client: TestClient, photos: list[bytes]) -> None:
    response = client.post("/api/v1/batches", data={"style_name": "candy", "respond": "job"}, files={"content": ("d.jpg", photos[0], "image/jpeg")})
    assert response.status_code == 202 and response.json()["pairs"] == 1


def test_refusals_leave_nothing_behind(client: TestClient, services: Services, photos: list[bytes]) -> None:
    before = _counts(services)
    nothing = client.post("/api/v1/batches", data={"style_name": "candy"})
    assert nothing.status_code == 422 and "at least one photo" in nothing.json()["error"]["message"]
    unknown = client.post("/api/v1/batches", data={"style_name": ["candy", "nope"]}, files={"content": ("d.jpg", photos[0], "image/jpeg")})
    assert unknown.status_code == 422 and "unknown style 'nope'" in unknown.json()["error"]["message"]
    too_many = client.post(
        "/api/v1/batches",
        data={"style_name": ["candy", "mosaic", "udnie", "rain_princess"] * 2, "content_id": ["x"] * 9},
    )
    assert too_many.status_code == 422 and "a batch paints at most 64" in too_many.json()["error"]["message"]
    not_a_photo = client.post("/api/v1/batches", data={"style_name": "candy"}, files={"content": ("d.jpg", b"not an image", "image/jpeg")})
    assert not_a_photo.status_code == 422
    assert _counts(services) == before  # nothing kept, nothing queued


def test_the_body_limit_and_the_rate_limits_hold_for_batches(tmp_path: Path, models_dir: Path, photos: list[bytes]) -> None:
    settings = make_settings(
        tmp_path, models_dir, batch_max_bytes=100_000, rate_limit_paintings_per_ip=5, rate_limit_uploads_per_ip=4
    )
    services = Services.open(settings, public_url="http://testserver")
    with TestClient(create_app(services=services, workers=0, mail=False)) as client:
        big = client.post("/api/v1/batches", data={"style_name": "candy"}, files=[("content", (f"{i}.jpg", photos[0] + b"\0" * 400_000, "image/jpeg")) for i in range(3)])
        assert big.status_code == 413  # 1.2 MB over 100 kB and the form's 1 MiB slack, unread
        # 2 photos x 3 styles = 6 pictures: over the 5 paintings per address, refused whole
        over = client.post(
            "/api/v1/batches",
            data={"style_name": ["candy", "mosaic", "udnie"]},
            files=[("content", ("a.jpg", photos[0], "image/jpeg")), ("content", ("b.jpg", photos[1], "image/jpeg"))],
        )
        assert over.status_code == 429 and "retry-after" in over.headers
        assert _counts(services) == (0, 0)
        # the uploads limit counts every file, not the request: 2 counted above, 3 files now > 4
        services.settings.rate_limit_paintings_per_ip = 0
        files = client.post(
            "/api/v1/batches", data={"style_name": "candy"},
            files=[("content", (f"{n}.jpg", photos[n], "image/jpeg")) for n in range(3)],
        )
        assert files.status_code == 429 and "upload" in files.json()["error"]["message"]
        assert _counts(services) == (0, 0)
    services.close()
