"""The operator view: off without a token, signed in with it, queue actions that act."""

from __future__ import annotations

import logging

import pytest
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
    assert not admin.check_session(services, value + "x", now=1001.0)
    assert not admin.check_session(services, value[:-1], now=1001.0)
    services.settings.admin_token = "another token"
    assert not admin.check_session(services, value, now=1001.0)


def test_signing_out_ends_the_session_on_the_server(client: TestClient, services: Services) -> None:
    services.settings.admin_token = TOKEN
    _sign_in(client)
    cookie = client.cookies.get("atelier_admin")
    assert cookie and client.get("/admin").status_code == 200
    out = client.post("/admin/logout", data={"csrf_token": form_token(client)}, follow_redirects=False)
    assert out.status_code == 303
    # Someone who copied the cookie before the sign-out (another tab, a stolen laptop, a proxy
    # log) cannot use it afterwards: the session is gone from the database, not just the browser.
    client.cookies.set("atelier_admin", cookie, path="/admin")
    assert client.get("/admin").status_code == 401
    assert client.post("/admin/jobs/1/cancel", data={"csrf_token": form_token(client)}).status_code == 401


def test_wrong_bearer_tokens_are_limited_and_logged_like_the_login_form(
    client: TestClient, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    services.settings.admin_token = TOKEN
    services.settings.rate_limit_admin_logins_per_ip = 3
    caplog.set_level(logging.WARNING, logger="atelier")
    codes = [client.get("/admin", headers={"Authorization": f"Bearer guess-{n}"}).status_code for n in range(6)]
    assert codes == [401, 401, 401, 429, 429, 429]
    refused = client.get("/admin", headers={"Authorization": "Bearer guess-7"})
    assert int(refused.headers["Retry-After"]) > 0
    # Over the limit, not even the right token is looked at: a guesser learns nothing more.
    assert client.get("/admin", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 429
    # One count per address, whichever way the token comes: the form is refused too.
    form = client.post("/admin/login", data={"csrf_token": form_token(client), "token": TOKEN})
    assert form.status_code == 429
    wrong = [r for r in caplog.records if "admin: wrong token" in r.getMessage()]
    assert len(wrong) == 3 and all("testclient" in r.getMessage() for r in wrong)


def test_the_right_bearer_token_does_not_use_up_the_limit(client: TestClient, services: Services) -> None:
    # A monitoring script that reads /admin with the token every minute is never refused.
    services.settings.admin_token = TOKEN
    services.settings.rate_limit_admin_logins_per_ip = 3
    assert all(client.get("/admin", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200 for _ in range(8))
    assert client.get("/admin", headers={"Authorization": "Bearer guess"}).status_code == 401
