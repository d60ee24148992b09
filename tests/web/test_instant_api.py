"""The instant JSON API over HTTP (in process): uploads, stylize, re-pick, styles, refusals."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from atelier.art.blocks.images import decode_image
from atelier.service.context import Services
from atelier.service.stylize import stylize_image
from atelier.service.uploads import get_upload
from atelier.web.app import create_app

from tests.service.service_fixtures import free_port, make_settings, small_jpeg


def _image(response) -> Image.Image:  # type: ignore[no-untyped-def]
    return Image.open(io.BytesIO(response.content))


def test_an_upload_answers_an_id_and_the_photo_size(client: TestClient, photo_bytes: bytes) -> None:
    response = client.post("/api/v1/uploads", files={"file": ("dog.jpg", photo_bytes, "image/jpeg")})
    assert response.status_code == 201, response.text
    body = response.json()
    assert len(body["id"]) == 32 and body["id"].isalnum()
    assert (body["width"], body["height"]) == (160, 120)
    assert body["kind"] == "content" and body["content_type"] == "image/jpeg"


def test_stylize_with_a_file_paints_the_photo_like_the_cli_does(
    client: TestClient, services: Services, photo_bytes: bytes, painting_bytes: bytes
) -> None:
    response = client.post(
        "/api/v1/stylize",
        files={"content": ("dog.jpg", photo_bytes, "image/jpeg"), "style": ("starry.jpg", painting_bytes, "image/jpeg")},
        data={"format": "png"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    picture = _image(response)
    assert picture.size == (160, 120)
    # The same engine and weights through the uncached single-call pipeline of `atelier render`.
    limits = {"max_pixels": 10**8, "max_bytes": 10**8}
    expected = stylize_image(
        services.loader,
        decode_image(photo_bytes, **limits),
        engine="microast",
        styles=[decode_image(painting_bytes, **limits)],
    )
    difference = np.abs(np.asarray(picture, dtype=np.int16) - np.asarray(expected, dtype=np.int16))
    assert difference.max() <= 1
    assert response.headers["X-Content-Id"] and response.headers["X-Style-Id"]


def test_re_picking_a_style_with_content_id_reuses_the_cached_photo(
    client: TestClient, photo_bytes: bytes
) -> None:
    first = client.post(
        "/api/v1/stylize",
        files={"content": ("dog.jpg", photo_bytes, "image/jpeg")},
        data={"style_name": "candy"},
    )
    assert first.status_code == 200, first.text
    assert first.headers["X-Content-Cached"] == "0"
    content_id = first.headers["X-Content-Id"]
    again = client.post("/api/v1/stylize", data={"content_id": content_id, "style_name": "mosaic"})
    assert again.status_code == 200, again.text
    assert again.headers["X-Content-Cached"] == "1"
    assert "X-Content-Id" not in again.headers
    assert _image(again).size == (160, 120)
    # A different style paints a different picture.
    a = np.asarray(_image(first), dtype=np.int16)
    b = np.asarray(_image(again), dtype=np.int16)
    assert np.abs(a - b).mean() > 10


def test_the_strength_slider_blends_towards_the_photo(client: TestClient, photo_bytes: bytes) -> None:
    upload = client.post("/api/v1/uploads", files={"file": ("dog.jpg", photo_bytes, "image/jpeg")}).json()
    photo = np.asarray(Image.open(io.BytesIO(photo_bytes)), dtype=np.float64)
    distances, cached = [], []
    for alpha in (1.0, 0.5, 0.0):
        response = client.get(
            "/api/v1/stylize", params={"content_id": upload["id"], "style_name": "udnie", "alpha": alpha, "format": "png"}
        )
        assert response.status_code == 200, response.text
        distances.append(np.abs(np.asarray(_image(response), dtype=np.float64) - photo).mean())
        cached.append(response.headers["X-Result-Cached"])
    # The filter painted once; the other strengths blend its cached picture (the page says so
    # rather than "painted in 0.00 s").
    assert cached == ["0", "1", "1"]
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 2.0  # strength 0 is the photo itself


def test_size_sets_the_longest_side_and_is_capped_by_the_server(client: TestClient, photo_bytes: bytes) -> None:
    upload = client.post("/api/v1/uploads", files={"file": ("dog.jpg", photo_bytes, "image/jpeg")}).json()
    small = client.get("/api/v1/stylize", params={"content_id": upload["id"], "style_name": "candy", "size": 64})
    assert _image(small).size == (64, 48)
    big = client.get("/api/v1/stylize", params={"content_id": upload["id"], "style_name": "candy", "size": 5000})
    assert big.status_code == 200
    assert max(_image(big).size) == 256  # instant_max_size of the test settings


def test_preserve_color_keeps_the_photo_colours(client: TestClient, photo_bytes: bytes) -> None:
    upload = client.post("/api/v1/uploads", files={"file": ("dog.jpg", photo_bytes, "image/jpeg")}).json()
    params = {"content_id": upload["id"], "style_name": "candy", "format": "png"}
    plain = np.asarray(_image(client.get("/api/v1/stylize", params=params)), dtype=np.float64)
    kept = np.asarray(_image(client.get("/api/v1/stylize", params=params | {"preserve_color": True})), dtype=np.float64)
    photo = np.asarray(Image.open(io.BytesIO(photo_bytes)), dtype=np.float64)

    def chroma(a: np.ndarray) -> np.ndarray:
        return a - a.mean(axis=2, keepdims=True)

    assert np.abs(chroma(kept) - chroma(photo)).mean() < np.abs(chroma(plain) - chroma(photo)).mean() / 2


def test_styles_lists_the_filters_with_names_in_the_request_language(client: TestClient) -> None:
    english = client.get("/api/v1/styles", headers={"Accept-Language": "en-GB"}).json()
    names = {s["name"]: s for s in english["styles"]}
    assert {"candy", "mosaic", "rain_princess", "udnie", "pointilism"} <= set(names)
    assert names["rain_princess"]["title"] == "Rain Princess"
    spanish = client.get("/api/v1/styles", headers={"Accept-Language": "es-MX,es;q=0.9"}).json()
    assert spanish["locale"] == "es"
    titles = {s["name"]: s["title"] for s in spanish["styles"]}
    assert titles["rain_princess"] == "La princesa de la lluvia"
    thumb = client.get(names["candy"]["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert _image(thumb).size == (192, 192)


@pytest.mark.parametrize(
    ("data", "files", "status", "code"),
    [
        ({"style_name": "candy"}, None, 422, "invalid_request"),  # no photo
        ({"content_id": "0" * 32, "style_name": "candy"}, None, 404, "not_found"),
        ({"content_id": "../etc/passwd", "style_name": "candy"}, None, 404, "not_found"),
        ({"style_name": "no-such-style"}, "photo", 422, "refused"),
        ({"style_name": "candy", "alpha": "2"}, "photo", 422, "invalid_request"),
        ({"style_name": "candy"}, "garbage", 422, "bad_image"),
        ({"style_name": "candy"}, "empty", 422, "empty_file"),
    ],
)
def test_bad_requests_get_a_clear_json_error(
    client: TestClient, photo_bytes: bytes, data: dict, files: str | None, status: int, code: str
) -> None:
    payload = {"photo": photo_bytes, "garbage": b"this is not an image at all", "empty": b""}
    sent = {"content": ("x.jpg", payload[files], "image/jpeg")} if files else None
    response = client.post("/api/v1/stylize", data=data, files=sent)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


def test_a_photo_over_the_size_limit_is_refused_with_413(client: TestClient, services: Services) -> None:
    services.settings.max_upload_bytes = 1000
    response = client.post("/api/v1/uploads", files={"file": ("big.jpg", b"\xff\xd8\xff" + b"0" * 5000, "image/jpeg")})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_presigned_upload_to_the_local_store_then_confirm(
    client: TestClient, photo_bytes: bytes
) -> None:
    presigned = client.post("/api/v1/uploads/presign", json={"content_type": "image/jpeg"})
    assert presigned.status_code == 201, presigned.text
    body = presigned.json()
    assert body["url"] == "http://testserver/blobs"
    # Not uploaded yet: confirming refuses.
    assert client.post(body["confirm_url"]).status_code == 422
    posted = client.post("/blobs", data=body["fields"], files={"file": ("dog.jpg", photo_bytes, "image/jpeg")})
    assert posted.status_code == 204, posted.text
    confirmed = client.post(body["confirm_url"])
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["width"] == 160
    painted = client.get("/api/v1/stylize", params={"content_id": body["id"], "style_name": "mosaic"})
    assert painted.status_code == 200


def test_a_presigned_upload_that_breaks_its_policy_is_refused(client: TestClient, photo_bytes: bytes) -> None:
    body = client.post("/api/v1/uploads/presign", json={"content_type": "image/png"}).json()
    # The policy says image/png; a JPEG announced as such would need a new signature.
    fields = dict(body["fields"]) | {"Content-Type": "image/jpeg"}
    response = client.post("/blobs", data=fields, files={"file": ("dog.jpg", photo_bytes, "image/jpeg")})
    assert response.status_code == 403


HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"


def test_a_direct_upload_policy_works_once(client: TestClient, photo_bytes: bytes) -> None:
    body = client.post("/api/v1/uploads/presign", json={"content_type": "image/jpeg"}).json()
    assert client.post("/blobs", data=body["fields"], files={"file": ("dog.jpg", photo_bytes, "image/jpeg")}).status_code == 204
    # The same signed fields again, before and after confirmation: refused, nothing replaced.
    again = client.post("/blobs", data=body["fields"], files={"file": ("x.jpg", HTML, "image/jpeg")})
    assert again.status_code == 403 and "used" in again.json()["error"]["message"]
    assert client.post(body["confirm_url"]).status_code == 200
    after = client.post("/blobs", data=body["fields"], files={"file": ("x.jpg", HTML, "image/jpeg")})
    assert after.status_code == 403
    painted = client.get("/api/v1/stylize", params={"content_id": body["id"], "style_name": "mosaic"})
    assert painted.status_code == 200, painted.text


def test_confirmation_checks_what_is_stored_every_time_and_keeps_it_out_of_the_policys_reach(
    tmp_path: Path, models_dir: Path, photo_bytes: bytes
) -> None:
    # S3 itself lets a presigned POST be used until it expires; what the app keeps must not
    # change under it: confirmation moves the checked file to a key no policy names, and a
    # second confirmation checks the stored file again rather than answering from the row.
    import uuid

    import boto3
    import httpx

    from tests.store.s3_server import PolicyEnforcingMotoServer

    server = PolicyEnforcingMotoServer(ip_address="127.0.0.1", port=free_port(), secret_access_key="s3-secret")
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint, bucket = f"http://{host}:{port}", f"atelier-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="s3-key", aws_secret_access_key="s3-secret").create_bucket(Bucket=bucket)
        settings = make_settings(
            tmp_path / "data", models_dir, storage_url=f"s3://{bucket}/site", s3_endpoint_url=endpoint,
            s3_region="us-east-1", s3_access_key_id="s3-key", s3_secret_access_key="s3-secret",
        )
        services = Services.open(settings, public_url="http://testserver")
        try:
            with TestClient(create_app(services=services, workers=0, mail=False)) as client:
                body = client.post("/api/v1/uploads/presign", json={"content_type": "image/jpeg"}).json()
                assert httpx.post(body["url"], data=body["fields"], files={"file": ("dog.jpg", photo_bytes, "image/jpeg")}).status_code == 204
                first = client.post(body["confirm_url"])
                assert first.status_code == 200, first.text
                # The policy is still good at S3: it takes a page of HTML under the same key.
                assert httpx.post(body["url"], data=body["fields"], files={"file": ("x.jpg", HTML, "image/jpeg")}).status_code == 204
                second = client.post(body["confirm_url"])
                assert second.status_code == 200 and second.json() == first.json()
                painted = client.get("/api/v1/stylize", params={"content_id": body["id"], "style_name": "mosaic"})
                assert painted.status_code == 200, painted.text
                # What the row points at is the photo that was checked, at a key of its own.
                info = get_upload(services, body["id"])
                assert info.blob_key != body["fields"]["key"].removeprefix("site/")
                assert services.blobs.read(info.blob_key) == photo_bytes
                # And if the kept file itself were changed, confirming again would notice.
                services.blobs.put(info.blob_key, HTML, content_type="image/jpeg")
                third = client.post(body["confirm_url"])
                assert third.status_code in (404, 422), third.text
        finally:
            services.close()
    finally:
        server.stop()


def test_two_paintings_blend_and_a_filter_does_not(client: TestClient, photo_bytes: bytes, painting_bytes: bytes, style_dir: Path) -> None:
    def upload(data: bytes, kind: str) -> str:
        return client.post("/api/v1/uploads", files={"file": ("x.jpg", data, "image/jpeg")}, data={"kind": kind}).json()["id"]

    photo, starry, muse = upload(photo_bytes, "content"), upload(painting_bytes, "style"), upload(small_jpeg(style_dir / "la_muse.jpg", 256), "style")
    params = {"content_id": photo, "style_id": starry, "format": "png"}

    def paint(**extra: object) -> np.ndarray:
        response = client.get("/api/v1/stylize", params=params | extra)
        assert response.status_code == 200, response.text
        return np.asarray(_image(response), dtype=np.float64)

    alone, other, half = paint(), paint(style_id=muse), paint(blend_id=muse, blend=0.5)
    # Between the two, and neither of them.
    assert np.abs(half - alone).mean() > 3 and np.abs(half - other).mean() > 3
    refused = client.get("/api/v1/stylize", params=params | {"blend_name": "candy"})
    assert refused.status_code == 422 and "only two paintings" in refused.json()["error"]["message"]
