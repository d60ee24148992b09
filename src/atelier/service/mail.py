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
    "MailTemplate",
    "Mailer",
    "PermanentMailError",
    "RenderedMail",
    "SmtpTransport",
    "TEMPLATES",
    "mail_retry",
    "register_template",
    "render_mail",
]
