"""Mail: rendering in en/es, the outbox table and its ``mail.send`` jobs, and delivery by the mail
sender (a worker of that kind alone) to a real SMTP server on loopback (aiosmtpd) in plain SMTP,
STARTTLS, implicit TLS and with a login; retries with the mail's backoff, and refusals."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import Engine, select, update

from atelier.service import lanes
from atelier.service.context import Services
from atelier.service.mail import (
    MAIL_JOB,
    FolderTransport,
    Mailer,
    SmtpConfig,
    SmtpTransport,
    Transport,
    mail_retry,
    render_mail,
)
from atelier.service.worker import Worker
from atelier.store.db import Job, JobStatus, OutboxEmail, transaction, utcnow
from atelier.store.queue import enqueue

from tests.service.service_fixtures import Inbox, free_port, make_settings

# ------------------------------------------------------------------------------------------------
# a real SMTP server on loopback


def _authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"atelier", b"s3cret pass")
    return AuthResult(success=ok)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, certificate))
    return context


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def services(tmp_path: Path, models_dir: Path) -> Iterator[Services]:
    services = Services.open(make_settings(tmp_path / "data", models_dir))
    yield services
    services.close()


@pytest.fixture
def engine(services: Services) -> Engine:
    return services.engine


def _queue(engine: Engine, to: str = "ana@example.com", *, locale: str = "en", dedupe: str | None = None, max_attempts: int = 10) -> bool:
    mailer = Mailer(FolderTransport(Path("/nonexistent")), mail_from="hi@atelier.test", max_attempts=max_attempts)
    with transaction(engine) as session:
        return mailer.queue_mail(
            session, to=to, template="preview_ready", locale=locale, dedupe_key=dedupe, style="The Starry Night", link="http://x/en/a/TOKEN123"
        )


def _sender(services: Services, transport: Transport, *, mail_from: str = "hi@atelier.test", **options: object) -> Worker:
    """The mail sender as serve runs it (a worker of mail jobs alone, the mailer's backoff)."""
    mailer = Mailer(transport, mail_from=mail_from, **options)  # type: ignore[arg-type]
    return Worker(services, kinds=[MAIL_JOB], handlers={MAIL_JOB: mailer.send}, retry=mailer.retry)


def _rows(engine: Engine) -> list[OutboxEmail]:
    with transaction(engine, read_only=True) as session:
        return list(session.scalars(select(OutboxEmail).order_by(OutboxEmail.id)))


def _mail_jobs(engine: Engine) -> list[Job]:
    with transaction(engine, read_only=True) as session:
        return list(session.scalars(select(Job).where(Job.kind == MAIL_JOB).order_by(Job.id)))


def _make_due(engine: Engine) -> None:
    """The backoff has passed (rather than waiting for it)."""
    with transaction(engine) as session:
        session.execute(update(Job).where(Job.kind == MAIL_JOB, Job.status == JobStatus.QUEUED).values(run_at=utcnow()))


# ------------------------------------------------------------------------------------------------
# rendering


def test_mails_are_html_and_plain_text_in_english_and_spanish() -> None:
    english = render_mail("preview_ready", "en", style="The Starry Night", link="http://x/en/a/TOKEN")
    spanish = render_mail("preview_ready", "es-ES", style="La noche estrellada", link="http://x/es/a/TOKEN")
    assert english.subject == "Your artwork is ready"
    assert spanish.subject == "Tu obra está lista"
    for mail in (english, spanish):
        assert "/a/TOKEN" in mail.text and 'href="http://x/' in mail.html
        assert "<html" in mail.html and "<html" not in mail.text
    assert "Hemos pintado tu foto al estilo de La noche estrellada" in spanish.text
    assert "Ver mi obra" in spanish.html and "See my artwork" in english.html


def test_values_are_escaped_in_the_html_but_not_the_text() -> None:
    mail = render_mail("preview_ready", "en", style="<b>Bold</b> & co", link="http://x/a/T")
    assert "&lt;b&gt;Bold&lt;/b&gt; &amp; co" in mail.html
    assert "<b>Bold</b> & co" in mail.text


def test_a_dedupe_key_queues_a_mail_once(engine: Engine) -> None:
    assert _queue(engine, dedupe="artwork:1:preview") is True
    assert _queue(engine, dedupe="artwork:1:preview") is False
    assert _queue(engine, dedupe=None) is True
    assert len(_rows(engine)) == 2


def test_the_smtp_url_is_parsed_with_credentials_and_default_ports() -> None:
    plain = SmtpConfig.parse("smtp://mail.example.com")
    assert (plain.host, plain.port, plain.implicit_tls, plain.username) == ("mail.example.com", 25, False, None)
    tls = SmtpConfig.parse("smtps://user%40example.com:p%3Ass@mail.example.com")
    assert (tls.port, tls.implicit_tls, tls.username, tls.password) == (465, True, "user@example.com", "p:ss")
    with pytest.raises(ValueError, match="smtp://"):
        SmtpConfig.parse("http://mail.example.com")


# ------------------------------------------------------------------------------------------------
# delivery


def test_a_mail_is_an_outbox_row_and_a_mail_job_queued_in_the_callers_transaction(engine: Engine) -> None:
    with pytest.raises(RuntimeError), transaction(engine) as session:
        Mailer(FolderTransport(Path("/nonexistent")), mail_from="hi@atelier.test").queue_mail(
            session, to="ana@example.com", template="preview_ready", locale="en", style="S", link="http://x/a/T"
        )
        raise RuntimeError("the change the mail announces failed")
    assert _rows(engine) == [] and _mail_jobs(engine) == []
    _queue(engine, max_attempts=7)
    (row,) = _rows(engine)
    (job,) = _mail_jobs(engine)
    assert row.status == "pending" and job.payload == {"outbox_id": row.id}
    assert (job.status, job.priority, job.max_attempts) == (JobStatus.QUEUED, lanes.MAIL, 7)


def test_the_outbox_folder_gets_an_eml_file_and_the_link_is_logged(
    services: Services, engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _queue(engine)
    sender = _sender(services, FolderTransport(tmp_path / "outbox"), mail_from="Atelier <hi@atelier.test>")
    with caplog.at_level(logging.INFO, logger="atelier.service.mail"):
        assert sender.run_once() == "done"
    files = list((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 1
    message = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert message["To"] == "ana@example.com" and message["From"] == "Atelier <hi@atelier.test>"
    assert message.get_body(("html",)) is not None and message.get_body(("plain",)) is not None
    assert "link: http://x/en/a/TOKEN123" in caplog.text
    assert [r.status for r in _rows(engine)] == ["sent"]
    assert [j.status for j in _mail_jobs(engine)] == [JobStatus.DONE]


def test_a_mail_reaches_a_real_smtp_server(services: Services, engine: Engine, smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    _queue(engine, locale="es")
    sender = _sender(services, SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=5), mail_from="Atelier <hi@atelier.test>")
    assert sender.run_once() == "done"
    assert inbox.envelopes == [("hi@atelier.test", ["ana@example.com"])]
    message = inbox.messages[0]
    assert message["Subject"] == "Tu obra está lista"
    assert "http://x/en/a/TOKEN123" in message.get_body(("plain",)).get_content()
    assert message["Message-ID"].startswith("<atelier.outbox.")
    row = _rows(engine)[0]
    assert row.status == "sent" and row.sent_at is not None and row.attempts == 1


def test_a_job_that_runs_again_after_the_mail_left_does_not_send_it_again(
    services: Services, engine: Engine, smtp_server: tuple[Inbox, int]
) -> None:
    # At least once: the sender died after "250 OK" was recorded but before its job was done.
    inbox, port = smtp_server
    _queue(engine)
    sender = _sender(services, SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=5))
    assert sender.run_once() == "done"
    with transaction(engine) as session:  # its job again, as a reclaim after a lost lease runs it
        enqueue(session, MAIL_JOB, {"outbox_id": _rows(engine)[0].id})
    assert sender.run_once() == "done"
    assert len(inbox.messages) == 1 and _rows(engine)[0].status == "sent"


@pytest.mark.parametrize(
    "address",
    [
        "=?utf-8?q?attacker=40evil.test=2C_second=40evil.test=2C?=@example.com",
        "=?utf-8?q?=3Cscript=3E?=@example.com",
        "=?utf-8?q?ana=0D=0ABcc=3A_x=40evil.test?=@example.com",
    ],
)
def test_an_address_with_encoded_words_is_refused_for_good_not_sent_or_retried(
    services: Services, engine: Engine, smtp_server: tuple[Inbox, int], address: str
) -> None:
    # Rows queued before the door checked addresses (or by any other path): the sender refuses
    # them itself, at once, without a retry and without talking to the server.
    inbox, port = smtp_server
    _queue(engine, to=address)
    _queue(engine)
    sender = _sender(services, SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=5), mail_from="Atelier <hi@atelier.test>")
    assert [sender.run_once(), sender.run_once(), sender.run_once()] == ["failed", "done", None]
    refused, sent = _rows(engine)
    assert refused.status == "dead" and refused.attempts == 1 and "address" in (refused.last_error or "")
    assert sent.status == "sent"
    assert inbox.envelopes == [("hi@atelier.test", ["ana@example.com"])]


def test_starttls_and_login(
    services: Services, engine: Engine, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=_server_context(certificate),
        require_starttls=True,
        authenticator=_authenticator,
        auth_required=True,
    )
    controller.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trust the test's own CA
        _queue(engine)
        url = f"smtp://atelier:s3cret%20pass@127.0.0.1:{port}"
        assert _sender(services, SmtpTransport(url, starttls=True, timeout=5)).run_once() == "done"
        assert len(inbox.messages) == 1
        # Without STARTTLS the server refuses (it requires it): the mail waits for a retry.
        _queue(engine, to="bo@example.com")
        assert _sender(services, SmtpTransport(url, starttls=False, timeout=5)).run_once() == "retry"
        assert _rows(engine)[1].status == "pending"
    finally:
        controller.stop()


def test_implicit_tls_with_smtps(
    services: Services, engine: Engine, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, ssl_context=_server_context(certificate))
    controller.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        _queue(engine)
        assert _sender(services, SmtpTransport(f"smtps://127.0.0.1:{port}", timeout=5)).run_once() == "done"
        assert len(inbox.messages) == 1
    finally:
        controller.stop()


def test_an_unreachable_server_means_a_retry_later_never_a_lost_mail(services: Services, engine: Engine) -> None:
    port = free_port()  # nothing listens there
    _queue(engine)
    sender = _sender(services, SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=2), retry=mail_retry(30.0))
    assert sender.run_once() == "retry"
    row = _rows(engine)[0]
    assert row.status == "pending" and row.attempts == 1 and "cannot reach" in (row.last_error or "")
    # Backing off with the mail's policy: due again in 22.5 to 30 s, not before.
    (job,) = _mail_jobs(engine)
    wait = (job.run_at - utcnow()).total_seconds()
    assert job.status == JobStatus.QUEUED and 20 <= wait <= 30
    assert sender.run_once() is None and _rows(engine)[0].attempts == 1
    # The server comes up; once the backoff has passed, the mail goes out.
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        _make_due(engine)
        assert sender.run_once() == "done"
    finally:
        controller.stop()
    assert len(inbox.messages) == 1 and _rows(engine)[0].status == "sent" and _rows(engine)[0].attempts == 2


def test_a_refused_address_is_dead_at_once(services: Services, engine: Engine, smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    inbox.refuse.add("nobody@example.com")
    _queue(engine, to="nobody@example.com")
    assert _sender(services, SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=5)).run_once() == "failed"
    row = _rows(engine)[0]
    assert row.status == "dead" and "550" in (row.last_error or "")


def test_after_max_attempts_a_mail_is_dead(services: Services, engine: Engine) -> None:
    _queue(engine, max_attempts=2)
    sender = _sender(services, SmtpTransport(f"smtp://127.0.0.1:{free_port()}", timeout=1))
    assert sender.run_once() == "retry"
    _make_due(engine)
    assert sender.run_once() == "dead"
    row = _rows(engine)[0]
    assert row.status == "dead" and row.attempts == 2
    assert [j.status for j in _mail_jobs(engine)] == [JobStatus.DEAD]


def test_the_mails_backoff_grows_and_is_capped() -> None:
    policy = mail_retry(30.0)
    assert 22.5 <= policy.delay(1) <= 30
    assert 45 <= policy.delay(2) <= 60
    assert 2700 <= policy.delay(20) <= 3600


def test_painting_workers_leave_mail_jobs_to_the_mail_sender(services: Services, engine: Engine) -> None:
    from atelier.service.worker import load_handlers

    assert MAIL_JOB not in load_handlers()
    _queue(engine)
    assert Worker(services).run_once() is None
    assert [j.status for j in _mail_jobs(engine)] == [JobStatus.QUEUED]
