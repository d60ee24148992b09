"""`/api/v1/admin/jobs`: the admin page's queue verbs as JSON, behind the admin token, on SQLite
and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from atelier.service.context import Services
from atelier.web.app import create_app
from tests.service.service_fixtures import make_settings

TOKEN = "operator-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(database_url: str, tmp_path: Path, models_dir: Path) -> Iterator[tuple[TestClient, Services]]:
    settings = make_settings(tmp_path, models_dir, database_url=database_url, admin_token=TOKEN, rate_limit_admin_logins_per_ip=3)
    services = Services.open(settings, public_url="http://testserver")
    with TestClient(create_app(services=services, workers=0, mail=False)) as client:
        yield client, services
    services.close()


def test_without_an_admin_token_setting_the_api_does_not_exist(client: TestClient) -> None:
    assert client.get("/api/v1/admin/jobs", headers=AUTH).status_code == 404


def test_a_wrong_or_missing_token_is_refused_and_counted(api: tuple[TestClient, Services]) -> None:
    client, _ = api
    # the right token is counted and refunded: a script using it is never refused
    for _ in range(5):
        assert client.get("/api/v1/admin/jobs", headers=AUTH).status_code == 200
    missing = client.get("/api/v1/admin/jobs")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/admin/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/api/v1/admin/jobs/1/cancel", headers={"Authorization": "Bearer nope"}).status_code == 401
    # the fourth wrong try in the window (limit 3) is a 429; past the limit no token is compared
    over = client.get("/api/v1/admin/jobs", headers={"Authorization": "Bearer still-nope"})
    assert over.status_code == 429 and "retry-after" in over.headers
    assert client.get("/api/v1/admin/jobs", headers=AUTH).status_code == 429


def test_list_filters_and_pages(api: tuple[TestClient, Services]) -> None:
    client, services = api
    ids = [services.queue.enqueue("artwork.preview", {"artwork_id": n}) for n in range(3)]
    video = services.queue.enqueue("video.stylize", {"video_id": "v"}, priority=5)
    claimed = services.queue.claim("w-1", kinds=["video.stylize"])[0]
    assert claimed.id == video
    everything = client.get("/api/v1/admin/jobs", headers=AUTH).json()
    assert [j["id"] for j in everything["jobs"]] == [video, *reversed(ids)]
    assert everything["next_before"] is None
    running = client.get("/api/v1/admin/jobs?status=running", headers=AUTH).json()["jobs"]
    assert [(j["id"], j["worker"], j["position"]) for j in running] == [(video, "w-1", None)]
    queued = client.get("/api/v1/admin/jobs?status=queued&kind=artwork.preview", headers=AUTH).json()["jobs"]
    assert [(j["id"], j["position"]) for j in queued] == [(ids[2], 3), (ids[1], 2), (ids[0], 1)]
    page = client.get("/api/v1/admin/jobs?limit=2", headers=AUTH).json()
    assert [j["id"] for j in page["jobs"]] == [video, ids[2]] and page["next_before"] == ids[2]
    rest = client.get(f"/api/v1/admin/jobs?limit=2&before={page['next_before']}", headers=AUTH).json()
    assert [j["id"] for j in rest["jobs"]] == [ids[1], ids[0]]
    bad = client.get("/api/v1/admin/jobs?status=finished", headers=AUTH)
    assert bad.status_code == 422 and "unknown status finished" in bad.json()["error"]["message"]


def test_show_cancel_retry_priority_and_their_refusals(api: tuple[TestClient, Services]) -> None:
    client, services = api
    job_id = services.queue.enqueue("artwork.preview", {"artwork_id": 7, "note": "kept"})
    shown = client.get(f"/api/v1/admin/jobs/{job_id}", headers=AUTH).json()
    assert shown["status"] == "queued" and shown["payload"] == {"artwork_id": 7, "note": "kept"} and shown["position"] == 1
    assert client.get("/api/v1/admin/jobs/999999", headers=AUTH).status_code == 404

    raised = client.post(f"/api/v1/admin/jobs/{job_id}/priority", headers=AUTH, json={"priority": 40})
    assert raised.status_code == 200 and raised.json()["priority"] == 40
    assert services.queue.get(job_id).priority == 40  # type: ignore[union-attr]
    too_high = client.post(f"/api/v1/admin/jobs/{job_id}/priority", headers=AUTH, json={"priority": 5000})
    assert too_high.status_code == 422 and "between -1000 and 1000" in too_high.json()["error"]["message"]

    retry_queued = client.post(f"/api/v1/admin/jobs/{job_id}/retry", headers=AUTH)
    assert retry_queued.status_code == 409
    assert retry_queued.json()["error"]["message"] == f"job {job_id} is queued: only failed or dead or cancelled jobs can be retried"

    cancelled = client.post(f"/api/v1/admin/jobs/{job_id}/cancel", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"/api/v1/admin/jobs/{job_id}/cancel", headers=AUTH)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"

    retried = client.post(f"/api/v1/admin/jobs/{job_id}/retry", headers=AUTH)
    assert retried.status_code == 200 and retried.json()["status"] == "queued" and retried.json()["attempts"] == 0

