"""PostgreSQL stopped and started again under a running `atelier serve` (with its painting
worker). Meanwhile the API answers 503 with Retry-After (JSON), the pages a 503 page in the
visitor's language, /readyz says not ready; the commission accepted before the outage is not
lost (it is painted and mailed, once, after it); the same server process recovers by itself.

The server stopped here is one of the test's own (initdb into a temporary folder), never the
shared one on 5432.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from atelier.store.db import Job, JobStatus, OutboxEmail, make_engine, transaction

from tests.faults.fault_fixtures import PrivatePostgres, Process, base_env, wait_ready, wait_until
from tests.service.service_fixtures import add_catalog_style, free_port, make_settings, small_jpeg, smtp_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _follow(url: str, lines: list[str]) -> None:
    """Read a server-sent event stream until its ``done`` event (or it ends), keeping the lines."""
    with httpx.stream("GET", url, timeout=httpx.Timeout(120, connect=10)) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            lines.append(line)
            if line.startswith("event: done"):
                return


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if os.environ.get("ATELIER_TEST_SKIP_POSTGRES") == "1":
        pytest.skip("PostgreSQL tests skipped: ATELIER_TEST_SKIP_POSTGRES=1")
    server = PrivatePostgres().init()
    server.start()
    yield server
    server.destroy()


def test_server_answers_503_while_postgres_is_down_and_recovers_without_a_restart(
    private_postgres: PrivatePostgres, tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path
) -> None:
    styles = tmp_path / "styles"
    add_catalog_style(make_settings(tmp_path / "prep", models_dir, styles_dir=styles), style_dir)
    inbox, smtp, smtp_port = smtp_server()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = base_env(
        models_dir,
        ATELIER_DATA_DIR=str(tmp_path / "server"),
        ATELIER_DATABASE_URL=private_postgres.url,
        ATELIER_STYLES_DIR=str(styles),
        ATELIER_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        ATELIER_MAIL_RETRY_SECONDS="1",
        ATELIER_PUBLIC_URL=base,
        ATELIER_LEASE_SECONDS="4",
    )
    photo = small_jpeg(content_dir / "dog.jpg", 160)
    order_form = {"style_name": "starry_night", "email": "ana@example.com", "locale": "en"}
    server = Process("server", ["serve", "--port", str(port), "--workers", "1"], env, tmp_path / "server.log")
    try:
        wait_ready(base, server)
        with httpx.Client(base_url=base, timeout=60) as http:
            accepted = http.post("/api/v1/artworks", data=order_form, files={"content": ("dog.jpg", photo, "image/jpeg")})
            assert accepted.status_code == 201, accepted.text
            status_url = accepted.json()["status_url"]
            artwork_id = accepted.json()["id"]
            # A browser following the painting: its event stream stays open through the outage.
            events: list[str] = []
            follower = threading.Thread(target=_follow, args=(f"{base}{accepted.json()['events_url']}", events), daemon=True)
            follower.start()
            wait_until(lambda: any(line.startswith("event: progress") for line in events), seconds=15, what="the first event")

            private_postgres.stop()  # every connection the server holds is now dead
            down_since = time.monotonic()

            status = http.get(status_url)
            assert status.status_code == 503, status.text
            assert int(status.headers["Retry-After"]) > 0
            assert status.json()["error"]["code"] == "unavailable"
            refused = http.post("/api/v1/artworks", data=order_form, files={"content": ("dog.jpg", photo, "image/jpeg")})
            assert refused.status_code == 503 and "Retry-After" in refused.headers, refused.text
            page = http.get(f"/es/artworks/{artwork_id}", headers={"Accept": "text/html"})
            assert page.status_code == 503 and "Retry-After" in page.headers
            assert page.headers["content-type"].startswith("text/html") and "Volvemos enseguida" in page.text
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unreachable")
            assert http.get("/healthz").status_code == 200
            # Long enough for the worker to meet the outage and back off at least once.
            wait_until(lambda: "cannot reach the queue" in server.text(), seconds=15, what="the worker backing off")
            time.sleep(max(0.0, 3.0 - (time.monotonic() - down_since)))

            private_postgres.start()
            wait_ready(base, server, seconds=30)  # the same process: no restart
            assert http.get(status_url).status_code == 200
            again = http.post(
                "/api/v1/artworks", data=order_form | {"email": "bo@example.com"}, files={"content": ("dog.jpg", photo, "image/jpeg")}
            )
            assert again.status_code == 201, again.text

            def painted() -> bool:
                state = http.get(status_url).json()["status"]
                assert state != "failed", server.text()[-3000:]
                return state == "preview_ready"

            wait_until(painted, seconds=120, what="the commission accepted before the outage")
            follower.join(15)
            assert "event: done" in events, events[-5:]
        inbox.wait_for(1, timeout=30)
        time.sleep(2.5)  # a mail sender round or two later
        assert server.alive(), server.text()[-3000:]
    finally:
        server.stop()
        smtp.stop()
    engine = make_engine(private_postgres.url)
    try:
        with transaction(engine, read_only=True) as session:
            first = session.scalars(select(Job).order_by(Job.id)).first()
            mails = session.scalars(select(OutboxEmail)).all()
            assert first is not None and first.status == JobStatus.DONE
            ana = [m for m in mails if m.to_addr == "ana@example.com"]
            assert [(m.status, m.dedupe_key) for m in ana] == [("sent", f"artwork:{first.payload['artwork_id']}:preview")]
    finally:
        engine.dispose()
    assert [m["To"] for m in inbox.messages].count("ana@example.com") == 1
    log = server.text()
    assert "database unavailable" in log and "the queue answers again" in log
