"""Email: written to the outbox table in the same transaction as the change it announces, and
sent by a job of the store's queue (kind ``mail.send``), so a failed send is retried and never lost.

* :meth:`Mailer.queue_mail` renders a mail (HTML and plain text, in the recipient's language)
  and, in the caller's transaction, adds it to the outbox and queues its job; a ``dedupe_key``
  makes a second call for the same event (a job that ran twice) a no-op.
* :meth:`Mailer.send` is the job's handler: it hands the mail to the transport and records the
  outcome on the outbox row (what the operator sees in /admin). The queue's contract does the
  rest -- a lease, so several senders never send one mail at once; a temporary failure (server
  down, 4xx) retried with the mailer's :class:`~atelier.store.queue.RetryPolicy`
  (``ATELIER_MAIL_RETRY_SECONDS`` doubling, at most an hour); a permanent one (5xx: the address
  does not exist) or ``ATELIER_MAIL_MAX_ATTEMPTS`` sends mark the mail ``dead``.
  :func:`atelier.service.worker.start_mail_sender` runs a worker of this kind alone, so a long
  painting never holds a mail up (the painting workers do not take mail jobs).
* Transports: :class:`SmtpTransport` for ``ATELIER_SMTP_URL`` (``smtp://`` with optional
  STARTTLS, or ``smtps://``), :class:`FolderTransport` otherwise: ``.eml`` files in the outbox
  folder, with the links in the mail logged so a developer can click them.

A mail can go out twice if a sender dies between the server's "250 OK" and recording it (the
job's lease then runs out and another sender retries it): at-least-once, like every job; the
retry carries the same Message-ID, so a server that got the first can drop the second.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

import jinja2
from sqlalchemy.orm import Session

from atelier.service import i18n
from atelier.service.emails import EmailAddressError, validate_address
from atelier.service.errors import PermanentJobError
from atelier.service.lanes import priority_of
from atelier.store import outbox
from atelier.store.outbox import OutboxMail
from atelier.store.queue import RetryPolicy, enqueue

if TYPE_CHECKING:
    from atelier.config import Settings
    from atelier.service.metrics import Metrics
    from atelier.service.worker import JobContext

log = logging.getLogger(__name__)

#: The job kind that sends one mail of the outbox (its lane: atelier.service.lanes.MAIL; only
#: the mail sender takes these jobs).
MAIL_JOB = "mail.send"
_URL = re.compile(r"https?://[^\s<>\"')]+")


class MailError(Exception):
    """A send failed and may succeed later (the server is down, 4xx)."""


class PermanentMailError(MailError, PermanentJobError):
    """A send failed for good (the server refused the address: 5xx); its job fails at once."""


# ------------------------------------------------------------------------------------------------
# templates


#: The mails' Jinja files, like the pages': ``NAME.txt`` (a ``subject`` block and the plain-text
#: ``body``, on ``layout.txt``) and ``NAME.html`` (the HTML ``body`` on ``layout.html``, with the
#: ``button`` macro of ``button.html``); strings in ``{% trans %}`` / ``_()`` are translated with
#: the Babel catalog.
MAILS_DIR = Path(__file__).resolve().parent / "mails"
#: Every mail there is.
MAILS: tuple[str, ...] = tuple(sorted(p.stem for p in MAILS_DIR.glob("*.txt") if p.stem != "layout"))


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


@cache
def _environment(locale: str) -> jinja2.Environment:
    # One environment per language: installing translations changes the environment, so
    # sharing one between threads rendering different languages would mix them. HTML is
    # escaped, the plain text is not.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(MAILS_DIR),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.install_gettext_translations(i18n.translations(locale), newstyle=True)  # type: ignore[attr-defined]
    return env


def render_mail(name: str, locale: str, **context: Any) -> RenderedMail:
    """The mail ``name`` (one of :data:`MAILS`) in ``locale`` (en or es) with ``context`` filled in."""
    if name not in MAILS:
        raise KeyError(f"no mail {name!r}; the mails are {', '.join(MAILS)}")
    locale = i18n.normalize(locale)
    env = _environment(locale)
    text = env.get_template(f"{name}.txt")
    subject = "".join(text.blocks["subject"](text.new_context(dict(context)))).strip()
    html = env.get_template(f"{name}.html").render(locale=locale, subject=subject, **context)
    return RenderedMail(subject=subject, text=text.render(**context), html=html)


# ------------------------------------------------------------------------------------------------
# transports


class Transport(Protocol):
    def send(self, message: EmailMessage) -> str:
        """Deliver ``message``; return where it went (for the log). Raise MailError."""
        ...


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool

    @classmethod
    def parse(cls, url: str) -> SmtpConfig:
        parsed = urlparse(url)
        if parsed.scheme not in ("smtp", "smtps"):
            raise ValueError(f"ATELIER_SMTP_URL must start with smtp:// or smtps://, not {url.split(':')[0]!r}")
        if not parsed.hostname:
            raise ValueError("ATELIER_SMTP_URL names no host: smtp://[user:password@]host:port")
        implicit = parsed.scheme == "smtps"
        return cls(
            host=parsed.hostname,
            port=parsed.port or (465 if implicit else 25),
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            implicit_tls=implicit,
        )


class SmtpTransport:
    """Sends through an SMTP server: ``smtps://`` (TLS from the start), or ``smtp://`` with
    STARTTLS when ``starttls`` (required then: a server that does not offer it is refused rather
    than sent the password in the clear). The server's certificate is verified against the
    system's CAs (or ``SSL_CERT_FILE``)."""

    def __init__(self, url: str, *, starttls: bool = False, timeout: float = 30.0, local_hostname: str | None = None) -> None:
        self.config = SmtpConfig.parse(url)
        self.starttls = starttls
        self.timeout = timeout
        self.local_hostname = local_hostname

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context()

    def send(self, message: EmailMessage) -> str:
        c = self.config
        try:
            if c.implicit_tls:
                client: smtplib.SMTP = smtplib.SMTP_SSL(c.host, c.port, timeout=self.timeout, context=self._context(), local_hostname=self.local_hostname)
            else:
                client = smtplib.SMTP(c.host, c.port, timeout=self.timeout, local_hostname=self.local_hostname)
            with client:
                client.ehlo()
                if self.starttls and not c.implicit_tls:
                    if not client.has_extn("starttls"):
                        raise MailError(f"{c.host}:{c.port} does not offer STARTTLS (ATELIER_SMTP_STARTTLS is on)")
                    client.starttls(context=self._context())
                    client.ehlo()
                if c.username:
                    client.login(c.username, c.password or "")
                refused = client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise _classified(exc, next(iter(exc.recipients.values()), (0, b""))[0]) from exc
        except smtplib.SMTPResponseException as exc:
            raise _classified(exc, exc.smtp_code) from exc
        except (smtplib.SMTPException, OSError, socket.timeout) as exc:
            raise MailError(f"cannot reach {c.host}:{c.port}: {exc}") from exc
        if refused:
            raise PermanentMailError(f"refused by the server: {refused}")
        return f"smtp://{c.host}:{c.port}"


def _classified(exc: Exception, code: int) -> MailError:
    if 500 <= code < 600 and code != 530:  # 530: authentication required -- a setting to fix, not the address
        return PermanentMailError(f"refused by the mail server ({code}): {exc}")
    return MailError(f"the mail server answered {code}: {exc}")


class FolderTransport:
    """Writes each mail as an ``.eml`` file into ``folder`` and logs its links: mail on a laptop
    with no mail server."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def send(self, message: EmailMessage) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        ident = re.sub(r"[^A-Za-z0-9]", "", str(message["Message-ID"]))[:24]
        path = self.folder / f"{stamp}-{ident}.eml"
        temp = path.with_suffix(".part")
        temp.write_bytes(bytes(message))
        temp.replace(path)
        body = message.get_body(("plain",))
        links = _URL.findall(body.get_content() if body is not None else "")
        log.warning(
            "mail to %s (%s) written to %s%s",
            message["To"],
            message["Subject"],
            path,
            "".join(f"\n    link: {link}" for link in links),
        )
        return str(path)


# ------------------------------------------------------------------------------------------------
# the sender


def mail_retry(first_seconds: float = 30.0) -> RetryPolicy:
    """Mail's backoff: ``first_seconds`` (ATELIER_MAIL_RETRY_SECONDS) doubling, at most an hour,
    less up to a quarter at random so that mails that failed together do not return together."""
    return RetryPolicy(base_seconds=first_seconds, factor=2.0, max_seconds=3600.0, jitter=0.25)


class Mailer:
    """Queues mails and sends them (the handler of ``mail.send`` jobs). Thread-safe."""

    def __init__(
        self,
        transport: Transport,
        *,
        mail_from: str,
        max_attempts: int = 10,
        retry: RetryPolicy | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.transport = transport
        self.mail_from = mail_from
        self.max_attempts = max_attempts
        self.retry = retry or mail_retry()
        self.metrics = metrics

    @classmethod
    def from_settings(cls, settings: Settings, *, metrics: Metrics | None = None) -> Mailer:
        transport: Transport
        if settings.smtp_url:
            transport = SmtpTransport(settings.smtp_url, starttls=settings.smtp_starttls, timeout=settings.smtp_timeout)
        else:
            transport = FolderTransport(settings.data_dir / "outbox")
        return cls(
            transport,
            mail_from=settings.mail_from,
            max_attempts=settings.mail_max_attempts,
            retry=mail_retry(settings.mail_retry_seconds),
            metrics=metrics,
        )

    def queue_mail(
        self,
        session: Session,
        *,
        to: str,
        template: str,
        locale: str,
        dedupe_key: str | None = None,
        **context: Any,
    ) -> bool:
        """Render a mail, add it to the outbox and queue its job, in the caller's transaction.
        False (and nothing added) if a mail with ``dedupe_key`` is already there."""
        mail = render_mail(template, locale, **context)
        outbox_id = outbox.add(
            session, dedupe_key=dedupe_key, to_addr=to, subject=mail.subject, text_body=mail.text, html_body=mail.html
        )
        if outbox_id is None:
            log.info("mail %s already queued; not queueing it again", dedupe_key)
            return False
        enqueue(session, MAIL_JOB, {"outbox_id": outbox_id}, priority=priority_of(MAIL_JOB), max_attempts=self.max_attempts)
        return True

    def message(self, mail: OutboxMail) -> EmailMessage:
        try:
            # Checked at the door too; a row from before that check, or from any other path,
            # is refused for good here (a retry cannot make an address valid).
            to = validate_address(mail.to_addr)
        except EmailAddressError as exc:
            raise PermanentMailError(f"not a valid recipient address: {exc}") from None
        message = EmailMessage()
        message["Subject"] = mail.subject
        message["From"] = self.mail_from
        message["To"] = to
        message["Date"] = format_datetime(datetime.now().astimezone())
        domain = parseaddr(self.mail_from)[1].rpartition("@")[2] or "localhost"
        # Stable per outbox row: a retried send carries the same id, so a mail server that got
        # the first one can drop the duplicate.
        message["Message-ID"] = f"<atelier.outbox.{mail.id}@{domain}>"
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(mail.text_body)
        if mail.html_body:
            message.add_alternative(mail.html_body, subtype="html")
        return message

    def send(self, ctx: JobContext) -> dict[str, Any]:
        """The ``mail.send`` job: send the outbox row the payload names, record the outcome."""
        engine = ctx.services.engine
        mail = outbox.mail_to_send(engine, int(ctx.payload["outbox_id"]))
        if mail is None:  # sent by an earlier run of this job, or the row is gone
            return {"outbox_id": ctx.payload["outbox_id"], "sent": False}
        attempts = ctx.job.attempts
        try:
            where = self.transport.send(self.message(mail))
        except Exception as exc:  # noqa: BLE001 - MailError, or anything the transport threw
            final = ctx.is_final_failure(exc)
            outbox.record_failure(engine, mail.id, attempts=attempts, error=str(exc), dead=final)
            if isinstance(exc, PermanentMailError):
                log.error("mail %s to %s refused for good: %s", mail.id, mail.to_addr, exc)
            elif final:
                log.error("mail %s to %s given up after %d attempts: %s", mail.id, mail.to_addr, attempts, exc)
            else:
                log.warning("mail %s to %s failed (%s: %s); tried again after the backoff", mail.id, mail.to_addr, type(exc).__name__, exc)
            self._count("dead" if final else "retry")
            raise
        outbox.record_sent(engine, mail.id, attempts=attempts)
        self._count("sent")
        log.info("mail %s sent to %s via %s", mail.id, mail.to_addr, where)
        return {"outbox_id": mail.id, "sent": True}

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.mails.labels(outcome).inc()


__all__ = [
    "MAIL_JOB",
    "FolderTransport",
    "MailError",
    "Mailer",
    "PermanentMailError",
    "RenderedMail",
    "SmtpTransport",
    "MAILS",
    "mail_retry",
    "render_mail",
]
