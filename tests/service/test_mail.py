"""Mail: rendering in en/es, the outbox table, and delivery to a real SMTP server on loopback
(aiosmtpd) in plain SMTP, STARTTLS, implicit TLS and with a login; retries and refusals."""

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
from sqlalchemy import Engine, select

from atelier.service.mail import (
    FolderTransport,
    Mailer,
    SmtpConfig,
    SmtpTransport,
    backoff,
    queue_mail,
    render_mail,
)
from atelier.store.db import OutboxEmail, make_engine, transaction, utcnow
from atelier.store.migrations import upgrade

from tests.service.service_fixtures import Inbox, free_port

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
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'mail.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def _queue(engine: Engine, to: str = "ana@example.com", *, locale: str = "en", dedupe: str | None = None) -> bool:
    with transaction(engine) as session:
        return queue_mail(
            session, to=to, template="preview_ready", locale=locale, dedupe_key=dedupe, style="The Starry Night", link="http://x/en/a/TOKEN123"
        )


def _rows(engine: Engine) -> list[OutboxEmail]:
    with transaction(engine, read_only=True) as session:
        return list(session.scalars(select(OutboxEmail).order_by(OutboxEmail.id)))


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


def test_the_outbox_folder_gets_an_eml_file_and_the_link_is_logged(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _queue(engine)
    mailer = Mailer(engine, FolderTransport(tmp_path / "outbox"), mail_from="Atelier <hi@atelier.test>")
    with caplog.at_level(logging.INFO, logger="atelier.service.mail"):
        assert mailer.send_due() == 1
    files = list((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 1
    message = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert message["To"] == "ana@example.com" and message["From"] == "Atelier <hi@atelier.test>"
    assert message.get_body(("html",)) is not None and message.get_body(("plain",)) is not None
    assert "link: http://x/en/a/TOKEN123" in caplog.text
    assert [r.status for r in _rows(engine)] == ["sent"]


def test_a_mail_reaches_a_real_smtp_server(engine: Engine, smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    _queue(engine, locale="es")
    mailer = Mailer(engine, SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=5), mail_from="Atelier <hi@atelier.test>")
    assert mailer.send_due() == 1
    assert inbox.envelopes == [("hi@atelier.test", ["ana@example.com"])]
    message = inbox.messages[0]
    assert message["Subject"] == "Tu obra está lista"
    assert "http://x/en/a/TOKEN123" in message.get_body(("plain",)).get_content()
    assert message["Message-ID"].startswith("<atelier.outbox.")
    row = _rows(engine)[0]
    assert row.status == "sent" and row.sent_at is not None and row.attempts == 1


@pytest.mark.parametrize(
    "address",
    [
        "=?utf-8?q?attacker=40evil.test=2C_second=40evil.test=2C?=@example.com",
        "=?utf-8?q?=3Cscript=3E?=@example.com",
        "=?utf-8?q?ana=0D=0ABcc=3A_x=40evil.test?=@example.com",
    ],
)
def test_an_address_with_encoded_words_is_refused_for_good_not_sent_or_retried(
    engine: Engine, smtp_server: tuple[Inbox, int], address: str
) -> None:
    # Rows queued before the door checked addresses (or by any other path): the sender refuses
    # them itself, at once, without a retry and without talking to the server.
    inbox, port = smtp_server
    _queue(engine, to=address)
    _queue(engine)
    mailer = Mailer(engine, SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=5), mail_from="Atelier <hi@atelier.test>")
    assert mailer.send_due() == 1
    refused, sent = _rows(engine)
    assert refused.status == "dead" and refused.attempts == 1 and "address" in (refused.last_error or "")
    assert sent.status == "sent"
    assert inbox.envelopes == [("hi@atelier.test", ["ana@example.com"])]


def test_starttls_and_login(engine: Engine, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
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
        mailer = Mailer(engine, SmtpTransport(url, starttls=True, timeout=5), mail_from="hi@atelier.test")
        assert mailer.send_due() == 1
        assert len(inbox.messages) == 1
        # Without STARTTLS the server refuses (it requires it): the mail waits for a retry.
        _queue(engine, to="bo@example.com")
        plain = Mailer(engine, SmtpTransport(url, starttls=False, timeout=5), mail_from="hi@atelier.test")
        assert plain.send_due() == 0
        assert _rows(engine)[1].status == "pending"
    finally:
        controller.stop()


def test_implicit_tls_with_smtps(engine: Engine, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, ssl_context=_server_context(certificate))
    controller.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        _queue(engine)
        mailer = Mailer(engine, SmtpTransport(f"smtps://127.0.0.1:{port}", timeout=5), mail_from="hi@atelier.test")
        assert mailer.send_due() == 1
        assert len(inbox.messages) == 1
    finally:
        controller.stop()


def test_an_unreachable_server_means_a_retry_later_never_a_lost_mail(engine: Engine) -> None:
    port = free_port()  # nothing listens there
    _queue(engine)
    now = [utcnow()]
    mailer = Mailer(
        engine, SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=2), mail_from="hi@atelier.test", clock=lambda: now[0]
    )
    assert mailer.send_due() == 0
    row = _rows(engine)[0]
    assert row.status == "pending" and row.attempts == 1 and "cannot reach" in (row.last_error or "")
    assert mailer.send_due() == 0 and _rows(engine)[0].attempts == 1  # not due yet: backing off
    # The server comes up; once the backoff has passed, the mail goes out.
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        now[0] += dt.timedelta(minutes=2)
        assert mailer.send_due() == 1
    finally:
        controller.stop()
    assert len(inbox.messages) == 1 and _rows(engine)[0].status == "sent"


def test_a_refused_address_is_dead_at_once(engine: Engine, smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    inbox.refuse.add("nobody@example.com")
    _queue(engine, to="nobody@example.com")
    mailer = Mailer(engine, SmtpTransport(f"smtp://127.0.0.1:{port}", timeout=5), mail_from="hi@atelier.test")
    mailer.send_due()
    row = _rows(engine)[0]
    assert row.status == "dead" and "550" in (row.last_error or "")


def test_after_max_attempts_a_mail_is_dead(engine: Engine) -> None:
    _queue(engine)
    now = [utcnow()]
    mailer = Mailer(
        engine, SmtpTransport(f"smtp://127.0.0.1:{free_port()}", timeout=1), mail_from="a@b.test", max_attempts=2, clock=lambda: now[0]
    )
    mailer.send_due()
    now[0] += dt.timedelta(hours=2)
    mailer.send_due()
    row = _rows(engine)[0]
    assert row.status == "dead" and row.attempts == 2


def test_a_claimed_mail_is_not_claimed_again_until_its_lease_runs_out(engine: Engine) -> None:
    _queue(engine)
    now = [utcnow()]
    mailer = Mailer(engine, FolderTransport(Path("/nonexistent")), mail_from="a@b.test", clock=lambda: now[0])
    assert len(mailer.claim()) == 1
    assert mailer.claim() == []  # another sender finds nothing
    now[0] += dt.timedelta(minutes=6)  # the first sender died mid-send
    again = mailer.claim()
    assert len(again) == 1 and again[0].attempts == 2


def test_backoff_grows_and_is_capped() -> None:
    assert 22 <= backoff(1) <= 30
    assert 45 <= backoff(2) <= 60
    assert backoff(20) <= 3600
