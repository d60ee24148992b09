"""GET /api/v1/sheet: every style on one photo, small, the catalog's paintings in one batch."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from atelier.service.context import Services


@pytest.fixture
def two_paintings(services: Services, style_dir: Path) -> None:
    """The filters and two catalog paintings."""
    from atelier.service.catalog import Catalog, StyleEntry, _filter_entries

    paintings = [
        StyleEntry(name="starry-night", kind="painting", titles={"en": "The Starry Night", "es": "La noche estrellada"},
                   artist="Vincent van Gogh", image_path=style_dir / "starry_night.jpg", commission=True),
        StyleEntry(name="la-muse", kind="painting", titles={"en": "La Muse", "es": "La musa"},
                   artist="Pablo Picasso", image_path=style_dir / "la_muse.jpg"),
    ]
    services.__dict__["catalog"] = Catalog(services.settings.styles_path, entries=[*_filter_entries(), *paintings])


def test_the_sheet_paints_every_style_on_the_photo_with_the_paintings_in_one_batch(
    client: TestClient, two_paintings: None, photo_bytes: bytes
) -> None:
    photo = client.post("/api/v1/uploads", files={"file": ("dog.jpg", photo_bytes, "image/jpeg")}).json()["id"]
    response = client.get("/api/v1/sheet", params={"content_id": photo, "size": 96, "format": "json", "locale": "es"})
    assert response.status_code == 200, response.text
    body = response.json()
    names = [tile["name"] for tile in body["tiles"]]
    assert names == ["photo", "candy", "mosaic", "rain_princess", "udnie", "pointilism", "starry-night", "la-muse"]
    assert body["batch"] == 2 and response.headers["X-Batch-Size"] == "2"  # both paintings in one decoder call
    assert (body["width"], body["height"]) == (96, 72)
    titles = {tile["name"]: tile["title"] for tile in body["tiles"]}
    assert titles["starry-night"] == "La noche estrellada" and titles["photo"] == "Tu foto"
    pictures = {}
    for tile in body["tiles"]:
        assert tile["image"].startswith("data:image/jpeg;base64,")
        picture = Image.open(io.BytesIO(base64.b64decode(tile["image"].split(",", 1)[1])))
        assert picture.size == (96, 72)
        pictures[tile["name"]] = np.asarray(picture.convert("RGB"), dtype=np.float64)
    # Each tile is its own painting, not the photo again.
    for name in names[1:]:
        assert np.abs(pictures[name] - pictures["photo"]).mean() > 5, name


def test_the_sheet_as_an_image_is_the_labelled_sheet(client: TestClient, photo_bytes: bytes) -> None:
    photo = client.post("/api/v1/uploads", files={"file": ("dog.jpg", photo_bytes, "image/jpeg")}).json()["id"]
    response = client.get("/api/v1/sheet", params={"content_id": photo, "size": 64})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    sheet = Image.open(io.BytesIO(response.content))
    # The photo and the five filters on a 3-column grid, each with a label strip under it.
    assert sheet.width > 3 * 64 and sheet.height > 2 * 48


def test_a_sheet_needs_a_photo_that_is_there(client: TestClient) -> None:
    assert client.get("/api/v1/sheet", params={"content_id": "0" * 32}).status_code == 404
    assert client.get("/api/v1/sheet", params={"content_id": "x", "size": 4000}).status_code == 422
