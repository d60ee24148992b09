"""The operator view: off without a token, signed in with it, queue actions that act."""

from __future__ import annotations

from fastapi.testclient import TestClient

from atelier.service import admin
from atelier.service.context import Services
from atelier.store.db import JobStatus
from tests.web.web_fixtures import form_token

TOKEN = "correct horse battery staple 42"


def _sign_in(client: TestClient) -> None:
    response = client.post("/admin/login", data={"csrf_token": form_token(client), "token": TOKEN}, follow_redirects=False)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/admin" in cookie


def test_without_a_token_setting_there_is_no_admin(client: TestClient) -> None:
    assert client.get("/admin").status_code == 404
    assert client.post("/admin/login", data={"csrf_token": form_token(client), "token": ""}).status_code == 404


def test_the_admin_asks_for_the_token_and_refuses_a_wrong_one(client: TestClient, services: Services) -> None:
    services.settings.admin_token = TOKEN
    page = client.get("/admin")
    assert page.status_code == 401 and 'name="token"' in page.text
    wrong = client.post("/admin/login", data={"csrf_token": form_token(client), "token": TOKEN + "x"})
    assert wrong.status_code == 401 and "not right" in wrong.text
    assert client.post("/admin/jobs/1/cancel", data={"csrf_token": form_token(client)}).status_code == 401
    assert client.get("/admin", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_operator_sees_the_queue_and_can_cancel_retry_and_reprioritise(client: TestClient, services: Services) -> None:
    services.settings.admin_token = TOKEN
    first = services.queue.enqueue("artwork.preview", {"artwork_id": 1})
    second = services.queue.enqueue("artwork.preview", {"artwork_id": 2})
    claimed = services.queue.claim("some-worker")[0]
    services.queue.fail(claimed.id, "some-worker", "RuntimeError: out of memory", retry=False)
    services.queue.record_worker("some-worker", host="gpu-1", pid=4242, kinds=["artwork.preview"])
    _sign_in(client)
    page = client.get("/admin")
    assert page.status_code == 200
    assert "out of memory" in page.text and "gpu-1" in page.text
    assert client.post(f"/admin/jobs/{second}/priority", data={"csrf_token": form_token(client), "priority": "7"}, follow_redirects=False).status_code == 303
    assert services.queue.get(second).priority == 7  # type: ignore[union-attr]
    client.post(f"/admin/jobs/{second}/cancel", data={"csrf_token": form_token(client)})
    assert services.queue.get(second).status == JobStatus.CANCELLED  # type: ignore[union-attr]
    client.post(f"/admin/jobs/{first}/retry", data={"csrf_token": form_token(client)})
    job = services.queue.get(first)
    assert job is not None and job.status == JobStatus.QUEUED and job.attempts == 0
    filtered = client.get("/admin?status=cancelled").text
    assert f"<td>{second}</td>" in filtered and f"<td>{first}</td>" not in filtered.split("Failures")[0]


def test_a_session_expires_and_dies_with_a_new_token(services: Services) -> None:
    services.settings.admin_token = TOKEN
    value = admin.session_value(services, now=1000.0)
    assert admin.check_session(services, value, now=1001.0)
    assert not admin.check_session(services, value, now=1000.0 + admin.SESSION_SECONDS + 1)
    assert not admin.check_session(services, value.replace(".", ".0"), now=1001.0)
    services.settings.admin_token = "another token"
    assert not admin.check_session(services, value, now=1001.0)
