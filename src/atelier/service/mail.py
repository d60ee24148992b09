"""Email: written to the outbox table in the same transaction as the change it announces, then
sent from there by a sender thread, so that a failed send is retried and never lost.

* :func:`queue_mail` renders a mail (HTML and plain text, in the recipient's language) and adds
  it to the outbox in the caller's transaction; a ``dedupe_key`` makes a second call for the
  same event (a job that ran twice) a no-op.
* :class:`Mailer` sends what is due: it claims rows (a lease, like the job queue, so several
  processes can send without sending a mail twice), hands each to the transport and records
  the outcome. A temporary failure (server down, 4xx) is retried with exponential backoff; a
  permanent one (5xx: the address does not exist) or ``ATELIER_MAIL_MAX_ATTEMPTS`` failures
  mark the mail ``dead``, kept for the operator to see in /admin.
* Transports: :class:`SmtpTransport` for ``ATELIER_SMTP_URL`` (``smtp://`` with optional
  STARTTLS, or ``smtps://``), :class:`FolderTransport` otherwise: ``.eml`` files in the outbox
  folder, with the links in the mail logged so a developer can click them.

A mail can go out twice if a sender dies between the server's "250 OK" and recording it (the
claim's lease then runs out and another sender retries): at-least-once, like the jobs.
"""

from __future__ import annotations

import logging
import random
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

import jinja2
from sqlalchemy import Engine, Table, and_, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from atelier.service import i18n
from atelier.service.emails import EmailAddressError, validate_address
from atelier.store.db import OutboxEmail, insert_new, utcnow

if TYPE_CHECKING:
    from atelier.config import Settings
    from atelier.service.metrics import Metrics

log = logging.getLogger(__name__)

outbox = OutboxEmail.__table__
assert isinstance(outbox, Table)

#: How long a sender holds a claimed mail before another may retry it.
SEND_LEASE = timedelta(minutes=5)
_URL = re.compile(r"https?://[^\s<>\"')]+")


class MailError(Exception):
    """A send failed and may succeed later (the server is down, 4xx)."""


class PermanentMailError(MailError):
    """A send failed for good (the server refused the address: 5xx)."""


# ------------------------------------------------------------------------------------------------
# templates


@dataclass(frozen=True)
class MailTemplate:
    """A mail: Jinja2 sources of the subject, the plain text and the HTML body; strings in
    ``{% trans %}`` / ``_()`` are translated with the Babel catalog."""

    name: str
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


_LAYOUT = """<!doctype html>
<html lang="{{ locale }}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{ subject }}</title></head>
<body style="margin:0;padding:0;background:#f5f1ea;font-family:Georgia,'Times New Roman',serif;color:#2b2620">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f5f1ea"><tr><td align="center" style="padding:32px 12px">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="max-width:560px;background:#ffffff;border-radius:14px">
<tr><td style="padding:28px 32px 8px 32px;font-size:14px;letter-spacing:.18em;text-transform:uppercase;color:#8a6d4b">Atelier</td></tr>
<tr><td style="padding:8px 32px 28px 32px;font-size:17px;line-height:1.55">
{{ body }}
</td></tr></table>
<p style="font-size:12px;color:#8a8075;max-width:560px;font-family:Arial,sans-serif">{{ footer }}</p>
</td></tr></table></body></html>"""

_BUTTON = (
    '<p style="margin:28px 0"><a href="{href}" style="background:#2b2620;color:#ffffff;'
    'text-decoration:none;padding:14px 24px;border-radius:999px;font-family:Arial,sans-serif;'
    'font-size:16px;display:inline-block">{label}</a></p>'
)

TEMPLATES: dict[str, MailTemplate] = {}


def register_template(template: MailTemplate) -> MailTemplate:
    """Add a mail (other services add theirs, e.g. the download link after a sale)."""
    TEMPLATES[template.name] = template
    return template


register_template(
    MailTemplate(
        name="preview_ready",
        subject="{{ _('Your artwork is ready') }}",
        text="""{{ _('Hello,') }}

{% trans style=style %}Your photo has been painted in the style of {{ style }}. See your artwork here:{% endtrans %}

{{ link }}

{{ _('The link is personal: anyone who has it can see the picture. It is watermarked until you decide to buy it, for the price you choose.') }}

{{ _('Atelier') }}
""",
        html="""<p>{{ _('Hello,') }}</p>
<p>{% trans style=style %}Your photo has been painted in the style of {{ style }}. See your artwork here:{% endtrans %}</p>
{{ button(link, _('See my artwork')) }}
<p style="font-size:14px;color:#6b6158">{{ _('The link is personal: anyone who has it can see the picture. It is watermarked until you decide to buy it, for the price you choose.') }}</p>
<p style="font-size:13px;color:#8a8075;word-break:break-all">{{ link }}</p>""",
    )
)

register_template(
    MailTemplate(
        name="painting_failed",
        subject="{{ _('We could not paint your artwork') }}",
        text="""{{ _('Hello,') }}

{% trans style=style %}We are sorry: we could not paint your photo in the style of {{ style }}.{% endtrans %}

{{ _('You can try again with another photo here:') }}

{{ link }}

{{ _('Atelier') }}
""",
        html="""<p>{{ _('Hello,') }}</p>
<p>{% trans style=style %}We are sorry: we could not paint your photo in the style of {{ style }}.{% endtrans %}</p>
<p>{{ _('You can try again with another photo here:') }}</p>
{{ button(link, _('Try again')) }}""",
    )
)

register_template(
    MailTemplate(
        name="video_ready",
        subject="{{ _('Your video is ready') }}",
        text="""{{ _('Hello,') }}

{{ _('Your painted video is ready. Download it here:') }}

{{ link }}

{% trans days=days %}The link works for {{ days }} days.{% endtrans %}

{{ _('Atelier') }}
""",
        html="""<p>{{ _('Hello,') }}</p>
<p>{{ _('Your painted video is ready. Download it here:') }}</p>
{{ button(link, _('Download my video')) }}
<p style="font-size:14px;color:#6b6158">{% trans days=days %}The link works for {{ days }} days.{% endtrans %}</p>""",
    )
)


register_template(
    MailTemplate(
        name="download_ready",
        subject="{{ _('Your artwork in high resolution') }}",
        text="""{{ _('Hello,') }}

{% trans style=style %}Thank you for buying your artwork in the style of {{ style }}. Here it is at full resolution, twice as large and without the watermark:{% endtrans %}

{{ link }}

{% trans hours=hours, count=count %}The link works for {{ hours }} hours and for {{ count }} downloads.{% endtrans %}

{{ _('Atelier') }}
""",
        html="""<p>{{ _('Hello,') }}</p>
<p>{% trans style=style %}Thank you for buying your artwork in the style of {{ style }}. Here it is at full resolution, twice as large and without the watermark:{% endtrans %}</p>
{{ button(link, _('Download my artwork')) }}
<p style="font-size:14px;color:#6b6158">{% trans hours=hours, count=count %}The link works for {{ hours }} hours and for {{ count }} downloads.{% endtrans %}</p>
<p style="font-size:13px;color:#8a8075;word-break:break-all">{{ link }}</p>""",
    )
)


register_template(
    MailTemplate(
        name="hd_delayed",
        subject="{{ _('Your high-resolution artwork is delayed') }}",
        text="""{{ _('Hello,') }}

{% trans style=style %}Thank you for buying your artwork in the style of {{ style }}. We ran into a problem while preparing its high-resolution file. Your payment is safe: we have been alerted and will email you the download link as soon as the file is ready.{% endtrans %}

{{ _('Your receipt:') }}

{{ link }}

{{ _('Atelier') }}
""",
        html="""<p>{{ _('Hello,') }}</p>
<p>{% trans style=style %}Thank you for buying your artwork in the style of {{ style }}. We ran into a problem while preparing its high-resolution file. Your payment is safe: we have been alerted and will email you the download link as soon as the file is ready.{% endtrans %}</p>
{{ button(link, _('See my receipt')) }}""",
    )
)


register_template(
    MailTemplate(
        name="payment_failed",
        subject="{{ _('Your payment did not go through') }}",
        text="""{{ _('Hello,') }}

{% trans style=style %}The payment for your artwork in the style of {{ style }} did not arrive: the bank transfer or voucher was not completed in time, or your bank declined it. Nothing was charged.{% endtrans %}

{{ _('Your artwork is still waiting for you. You can pay again, with another method if you like, here:') }}

{{ link }}

{{ _('Atelier') }}
""",
        html="""<p>{{ _('Hello,') }}</p>
<p>{% trans style=style %}The payment for your artwork in the style of {{ style }} did not arrive: the bank transfer or voucher was not completed in time, or your bank declined it. Nothing was charged.{% endtrans %}</p>
<p>{{ _('Your artwork is still waiting for you. You can pay again, with another method if you like, here:') }}</p>
{{ button(link, _('Pay for my artwork')) }}""",
    )
)


@cache
def _environment(locale: str) -> jinja2.Environment:
    # One environment per language: installing translations changes the environment, so
    # sharing one between threads rendering different languages would mix them.
    env = jinja2.Environment(autoescape=True, extensions=["jinja2.ext.i18n"], undefined=jinja2.StrictUndefined)
    env.install_gettext_translations(i18n.translations(locale), newstyle=True)  # type: ignore[attr-defined]
    return env


@cache
def _text_environment(locale: str) -> jinja2.Environment:
    env = jinja2.Environment(autoescape=False, extensions=["jinja2.ext.i18n"], undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.install_gettext_translations(i18n.translations(locale), newstyle=True)  # type: ignore[attr-defined]
    return env


def render_mail(name: str, locale: str, **context: Any) -> RenderedMail:
    """The mail ``name`` in ``locale`` (en or es) with ``context`` filled in."""
    template = TEMPLATES[name]
    locale = i18n.normalize(locale)
    html_env = _environment(locale)
    text_env = _text_environment(locale)

    def button(href: str, label: str) -> Any:
        return jinja2.utils.markupsafe.Markup(_BUTTON.format(href=jinja2.utils.markupsafe.escape(href), label=jinja2.utils.markupsafe.escape(label)))

    subject = text_env.from_string(template.subject).render(**context).strip()
    text = text_env.from_string(template.text).render(**context)
    body = html_env.from_string(template.html).render(button=button, **context)
    footer = i18n.gettext(locale, "You receive this mail because this address was given for an order on Atelier.")
    html = html_env.from_string(_LAYOUT).render(
        locale=locale, subject=subject, body=jinja2.utils.markupsafe.Markup(body), footer=footer
    )
    return RenderedMail(subject=subject, text=text, html=html)


# ------------------------------------------------------------------------------------------------
# the outbox table


_wakeup = threading.Event()


def queue_mail(
    session: Session,
    *,
    to: str,
    template: str,
    locale: str,
    dedupe_key: str | None = None,
    **context: Any,
) -> bool:
    """Render a mail and add it to the outbox in the caller's transaction. False (and nothing
    added) if a mail with ``dedupe_key`` is already there."""
    mail = render_mail(template, locale, **context)
    values = {
        "dedupe_key": dedupe_key,
        "to_addr": to,
        "subject": mail.subject,
        "text_body": mail.text,
        "html_body": mail.html,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": utcnow(),
        "created_at": utcnow(),
    }
    added = insert_new(session, outbox, values, unique=["dedupe_key"])
    if added:
        # In-process senders wake as soon as the mail is committed.
        sa_event.listen(session, "after_commit", lambda _s: _wakeup.set(), once=True)
    else:
        log.info("mail %s already queued; not queueing it again", dedupe_key)
    return added


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


@dataclass(frozen=True)
class _Claimed:
    id: int
    to_addr: str
    subject: str
    text_body: str
    html_body: str | None
    attempts: int


def backoff(attempts: int, rng: random.Random | None = None, *, first: float = 30.0) -> float:
    """Seconds before the next try after ``attempts`` failures: ``first`` (30 s) doubling, at
    most an hour, less up to a quarter at random so mails that failed together do not return
    together."""
    base = min(3600.0, first * 2 ** max(0, attempts - 1))
    return base * (1.0 - 0.25 * (rng or random).random())


class Mailer:
    """Sends the outbox. Thread-safe; several processes may run one each."""

    def __init__(
        self,
        engine: Engine,
        transport: Transport,
        *,
        mail_from: str,
        max_attempts: int = 10,
        retry_seconds: float = 30.0,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.transport = transport
        self.mail_from = mail_from
        self.max_attempts = max_attempts
        self.retry_seconds = retry_seconds
        self.metrics = metrics
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, *, engine: Engine, metrics: Metrics | None = None) -> Mailer:
        transport: Transport
        if settings.smtp_url:
            transport = SmtpTransport(settings.smtp_url, starttls=settings.smtp_starttls, timeout=settings.smtp_timeout)
        else:
            transport = FolderTransport(settings.data_dir / "outbox")
        return cls(
            engine,
            transport,
            mail_from=settings.mail_from,
            max_attempts=settings.mail_max_attempts,
            retry_seconds=settings.mail_retry_seconds,
            metrics=metrics,
        )

    # -- one round ---------------------------------------------------------------------------

    def claim(self, limit: int = 10) -> list[_Claimed]:
        """Take up to ``limit`` due mails (pending, or claimed by a sender whose lease ran out)."""
        now = self.clock()
        due = (
            select(outbox.c.id)
            .where(outbox.c.status.in_(("pending", "sending")), outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.next_attempt_at, outbox.c.id)
            .limit(limit)
        )
        if self.engine.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        statement = (
            update(outbox)
            .where(outbox.c.id.in_(due.scalar_subquery()))
            .values(status="sending", attempts=outbox.c.attempts + 1, next_attempt_at=now + SEND_LEASE)
            .returning(outbox.c.id, outbox.c.to_addr, outbox.c.subject, outbox.c.text_body, outbox.c.html_body, outbox.c.attempts)
        )
        with self.engine.begin() as conn:
            rows = conn.execute(statement).all()
        return sorted((_Claimed(*row) for row in rows), key=lambda m: m.id)

    def message(self, mail: _Claimed) -> EmailMessage:
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

    def send_due(self, limit: int = 10) -> int:
        """Send what is due; the number of mails sent."""
        sent = 0
        for mail in self.claim(limit):
            try:
                where = self.transport.send(self.message(mail))
            except PermanentMailError as exc:
                self._settle(mail, "dead", error=str(exc))
                log.error("mail %s to %s refused for good: %s", mail.id, mail.to_addr, exc)
                self._count("dead")
                continue
            except Exception as exc:  # noqa: BLE001 - MailError, or anything the transport threw
                if mail.attempts >= self.max_attempts:
                    self._settle(mail, "dead", error=str(exc))
                    log.error("mail %s to %s given up after %d attempts: %s", mail.id, mail.to_addr, mail.attempts, exc)
                    self._count("dead")
                else:
                    delay = backoff(mail.attempts, first=self.retry_seconds)
                    self._settle(mail, "pending", error=str(exc), retry_in=delay)
                    log.warning("mail %s to %s failed (%s); retrying in %.0f s", mail.id, mail.to_addr, exc, delay)
                    self._count("retry")
                continue
            self._settle(mail, "sent")
            self._count("sent")
            sent += 1
            log.info("mail %s sent to %s via %s", mail.id, mail.to_addr, where)
        return sent

    def _settle(self, mail: _Claimed, status: str, *, error: str | None = None, retry_in: float = 0.0) -> None:
        now = self.clock()
        values: dict[str, Any] = {"status": status, "last_error": error[-2000:] if error else None}
        if status == "sent":
            values["sent_at"] = now
        if status == "pending":
            values["next_attempt_at"] = now + timedelta(seconds=retry_in)
        # Fenced on the attempt number: a sender whose claim ran out and was retried by another
        # does not overwrite the other's outcome.
        with self.engine.begin() as conn:
            conn.execute(
                update(outbox)
                .where(and_(outbox.c.id == mail.id, outbox.c.status == "sending", outbox.c.attempts == mail.attempts))
                .values(**values)
            )

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.mails.labels(outcome).inc()

    # -- the thread -----------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, interval: float = 2.0) -> None:
        """Send due mails until ``stop`` is set, waking when a mail is queued in this process
        and every ``interval`` seconds otherwise (other processes, retries coming due)."""
        failures = 0
        while not stop.is_set():
            try:
                while self.send_due() and not stop.is_set():
                    pass
            except Exception as exc:  # noqa: BLE001 - the database may be down; try again later
                failures += 1
                # A traceback for the first failure of an outage, one line for the next ones.
                log.warning(
                    "mail sender: could not read the outbox (%s: %s); try %d",
                    type(exc).__name__, (str(exc).strip().splitlines() or [""])[0], failures, exc_info=failures == 1,
                )
            else:
                if failures:
                    log.warning("mail sender: the outbox answers again after %d failed tries", failures)
                failures = 0
            _wakeup.wait(interval)
            _wakeup.clear()

    def start(self, stop: threading.Event, *, interval: float = 2.0) -> threading.Thread:
        def wake_on_stop() -> None:
            stop.wait()
            _wakeup.set()

        thread = threading.Thread(target=self.run, args=(stop,), kwargs={"interval": interval}, name="mail-sender", daemon=True)
        thread.start()
        threading.Thread(target=wake_on_stop, name="mail-sender-stop", daemon=True).start()
        return thread


__all__ = [
    "FolderTransport",
    "MailError",
    "MailTemplate",
    "Mailer",
    "PermanentMailError",
    "RenderedMail",
    "SmtpTransport",
    "TEMPLATES",
    "backoff",
    "queue_mail",
    "register_template",
    "render_mail",
]
