"""The SMTP server down: `atelier serve` paints a commission while nothing listens on the mail
port. The mail stays in the outbox (pending, its error recorded, retried with backoff) and goes
out, once, when a real SMTP server comes up on that port -- no restart, nothing lost."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from aiosmtpd.controller import Controller
from sqlalchemy import select

from atelier.store.db import OutboxEmail, make_engine, transaction

from tests.faults.fault_fixtures import Process, base_env, wait_ready, wait_until
from tests.service.service_fixtures import Inbox, add_catalog_style, free_port, link_in, make_settings, small_jpeg


def _outbox(engine) -> list[OutboxEmail]:  # type: ignore[no-untyped-def]
    with transaction(engine, read_only=True) as session:
        rows = session.scalars(select(OutboxEmail)).all()
        session.expunge_all()
        return list(rows)


def test_mail_waits_in_the_outbox_while_smtp_is_down_and_leaves_once_it_is_back(
    tmp_path: Path, models_dir: Path, content_dir: Path, style_dir: Path
) -> None:
    styles = tmp_path / "styles"
    add_catalog_style(make_settings(tmp_path / "prep", models_dir, styles_dir=styles), style_dir)
    smtp_port = free_port()  # nothing listens here yet: connections are refused
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    database = tmp_path / "server" / "atelier.db"
    env = base_env(
        models_dir,
        ATELIER_DATA_DIR=str(tmp_path / "server"),
        ATELIER_DATABASE_URL=f"sqlite:///{database}",
        ATELIER_STYLES_DIR=str(styles),
        ATELIER_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        ATELIER_SMTP_TIMEOUT="5",
        ATELIER_MAIL_RETRY_SECONDS="1",
        ATELIER_PUBLIC_URL=base,
    )
    server = Process("server", ["serve", "--port", str(port), "--workers", "1"], env, tmp_path / "server.log")
    engine = make_engine(f"sqlite:///{database}")
    controller = None
    try:
        wait_ready(base, server)
        with httpx.Client(base_url=base, timeout=60) as http:
            order = http.post(
                "/api/v1/artworks",
                data={"style_name": "starry_night", "email": "ana@example.com", "locale": "en"},
                files={"content": ("dog.jpg", small_jpeg(content_dir / "dog.jpg", 160), "image/jpeg")},
            )
            assert order.status_code == 201, order.text

            def painted() -> bool:
                status = http.get(order.json()["status_url"]).json()["status"]
                assert status != "failed", server.text()[-3000:]
                return status == "preview_ready"

            wait_until(painted, seconds=120, what="the preview")
        # The send failed and will be retried: the mail is pending, with its error and attempts.
        failed = wait_until(lambda: [m for m in _outbox(engine) if m.attempts >= 2], seconds=30, what="two failed sends")
        assert len(failed) == 1
        mail = failed[0]
        assert mail.status in ("pending", "sending") and mail.sent_at is None
        assert mail.last_error and "cannot reach" in mail.last_error

        inbox = Inbox()
        controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
        controller.start()  # the mail server is back
        message = inbox.wait_for(1, timeout=30)[0]
        assert message["To"] == "ana@example.com"
        assert link_in(message).startswith(f"{base}/en/a/")
        sent = wait_until(lambda: [m for m in _outbox(engine) if m.status == "sent"], seconds=10, what="the row marked sent")
        assert len(sent) == 1 and sent[0].id == mail.id
        time.sleep(2.5)  # a sender round or two later: still exactly one mail
        assert len(inbox.messages) == 1
        assert server.alive()
    finally:
        engine.dispose()
        server.stop()
        if controller is not None:
            controller.stop()
    assert "failed (MailError" in server.text() or "retrying in" in server.text()
