"""S3 unreachable: `atelier serve` on an S3 API server that goes away. Uploads, commissions and
direct-upload confirmations fail cleanly (503 with Retry-After; a page in the visitor's
language for the HTML form) and leave no record pointing at a missing blob; when the store is
back the same requests succeed, without restarting the server."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import boto3
import httpx
from sqlalchemy import select

from atelier.store.blobs import S3BlobStore
from atelier.store.db import Artwork, Job, Upload, make_engine, transaction

from tests.faults.fault_fixtures import Process, base_env, wait_ready
from tests.store.s3_server import PolicyEnforcingMotoServer
from tests.service.service_fixtures import add_catalog_style, free_port, make_settings, small_jpeg

KEY_ID, SECRET = "fault-key", "fault-secret"


def _rows(engine) -> dict[str, list]:  # type: ignore[no-untyped-def]
    with transaction(engine, read_only=True) as session:
        return {
            "uploads": [(u.id, u.blob_key, u.sha256) for u in session.scalars(select(Upload))],
            "artworks": [a.public_id for a in session.scalars(select(Artwork))],
            "jobs": [j.id for j in session.scalars(select(Job))],
        }


def test_uploads_fail_cleanly_while_s3_is_unreachable_and_work_again_when_it_is_back(
    tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path
) -> None:
    s3_port = free_port()
    s3 = PolicyEnforcingMotoServer(ip_address="127.0.0.1", port=s3_port, secret_access_key=SECRET)
    s3.start()
    endpoint = f"http://127.0.0.1:{s3_port}"
    bucket = f"atelier-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET).create_bucket(Bucket=bucket)
    styles = tmp_path / "styles"
    add_catalog_style(make_settings(tmp_path / "prep", models_dir, styles_dir=styles), style_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    database = tmp_path / "server" / "atelier.db"
    env = base_env(
        models_dir,
        ATELIER_DATA_DIR=str(tmp_path / "server"),
        ATELIER_DATABASE_URL=f"sqlite:///{database}",
        ATELIER_STYLES_DIR=str(styles),
        ATELIER_STORAGE_URL=f"s3://{bucket}/site",
        ATELIER_S3_ENDPOINT_URL=endpoint,
        ATELIER_S3_REGION="us-east-1",
        ATELIER_S3_ACCESS_KEY_ID=KEY_ID,
        ATELIER_S3_SECRET_ACCESS_KEY=SECRET,
    )
    photo = small_jpeg(content_dir / "dog.jpg", 160)
    server = Process("server", ["serve", "--port", str(port), "--workers", "0"], env, tmp_path / "server.log")
    engine = make_engine(f"sqlite:///{database}")
    try:
        wait_ready(base, server)
        with httpx.Client(base_url=base, timeout=60) as http:
            presigned = http.post("/api/v1/uploads/presign", json={"content_type": "image/jpeg", "kind": "content"})
            assert presigned.status_code == 201, presigned.text
            before = _rows(engine)

            s3.stop()  # the store goes away: connections are refused

            upload = http.post("/api/v1/uploads", files={"file": ("dog.jpg", photo, "image/jpeg")})
            assert upload.status_code == 503, upload.text
            assert int(upload.headers["Retry-After"]) > 0
            assert upload.json()["error"]["code"] == "store_error"
            order = http.post(
                "/api/v1/artworks",
                data={"style_name": "starry_night", "email": "ana@example.com", "locale": "en"},
                files={"content": ("dog.jpg", photo, "image/jpeg")},
            )
            assert order.status_code == 503 and "Retry-After" in order.headers, order.text
            # The browser's form gets a page in its language, not JSON.
            page = http.get("/es/commission", headers={"Accept": "text/html"})
            assert page.status_code == 200
            form_fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', page.text))
            form = http.post(
                "/es/commission",
                data={**form_fields, "style": "starry_night", "email": "ana@example.com"},
                files={"photo": ("dog.jpg", photo, "image/jpeg")},
                headers={"Accept": "text/html"},
            )
            assert form.status_code == 503 and "Retry-After" in form.headers
            assert form.headers["content-type"].startswith("text/html") and "Volvemos enseguida" in form.text
            confirm = http.post(presigned.json()["confirm_url"])
            assert confirm.status_code == 503, confirm.text
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["storage"].startswith("unreachable")
            assert http.get("/healthz").status_code == 200  # the process itself is fine

            # Nothing half-written: no upload, artwork or job was recorded by the failed requests.
            assert _rows(engine) == before

            s3.start()  # the same store (same bucket and objects) is back on the same port
            upload = http.post("/api/v1/uploads", files={"file": ("dog.jpg", photo, "image/jpeg")})
            assert upload.status_code == 201, upload.text
            order = http.post(
                "/api/v1/artworks",
                data={"style_name": "starry_night", "email": "ana@example.com", "locale": "en"},
                files={"content": ("dog.jpg", photo, "image/jpeg")},
            )
            assert order.status_code == 201, order.text
            assert http.get("/readyz").status_code == 200
        assert server.alive()
        # Every recorded upload that was confirmed has its blob; the unconfirmed presigned one
        # (no checksum yet) is the only row without one, and reconcile expires it.
        store = S3BlobStore(bucket, "site", endpoint_url=endpoint, region="us-east-1", access_key_id=KEY_ID, secret_access_key=SECRET)
        rows = _rows(engine)
        assert len(rows["uploads"]) == 3 and len(rows["artworks"]) == 1
        for _id, key, sha in rows["uploads"]:
            assert store.exists(key) == bool(sha), key
        store.close()
    finally:
        engine.dispose()
        server.stop()
        s3.stop()
    assert "store error: cannot reach the storage" in server.text()
