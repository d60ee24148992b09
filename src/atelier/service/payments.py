"""Pay what you want, then the HD picture: checkout, the payment webhook, the HD job, downloads.

* :func:`start_checkout` sends the buyer to pay the amount they chose (already checked against
  the minimum by :mod:`atelier.service.pricing`): a Stripe Checkout Session when
  ``ATELIER_STRIPE_SECRET_KEY`` is set, else the local demo provider -- a page that says no money
  moves, whose confirm button goes through :func:`record_payment` like a webhook does.
* :func:`handle_stripe_webhook` checks Stripe's signature on the raw body (5 minutes of
  tolerance) and hands paid checkout sessions (``checkout.session.completed`` paid at once,
  ``checkout.session.async_payment_succeeded`` for a delayed method) to :func:`record_payment`;
  a session completed unpaid is a pending sale, ``..._async_payment_failed`` a failed one that
  the buyer is told of (:func:`record_failed_payment`: a mail and the receipt page).
* :func:`record_payment` is the one place a payment is recorded, in ONE transaction: the event id
  (unique: a redelivered event changes nothing), the sale row, the artwork marked paid and its HD
  job queued. The database being down raises, and the webhook answers 5xx so Stripe retries.
* The HD job (:mod:`atelier.service.commission.job`, the same job function as the preview's)
  paints the style's recipe at its full resolution without the watermark, doubles it with
  waifu2x, stores it, and -- in the transaction that marks the artwork delivered -- queues the
  mail with the ``/d/{token}`` link, once.
* :func:`use_download` spends one use of a download link in one conditional UPDATE (count below
  the limit, not expired): two clicks at once cannot both take the last one.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from atelier.extras import need
from atelier.service import i18n
from atelier.service.commission.ahead import queue_paid_hd
from atelier.service.commission.mails import mail_owner
from atelier.service.commission.stages import HD, preview_link, receipt_path
from atelier.service.commission.status import ArtworkStatus, Event, move
from atelier.service.context import Services
from atelier.store.commissions import artwork_by_public_id, artwork_id_of, sale_by_reference, sales_of
from atelier.store.db import Artwork, ProcessedEvent, Sale, insert_new, new_token, transaction, utcnow
from atelier.store.downloads import artwork_of_download, spend_download

log = logging.getLogger(__name__)

STRIPE = "stripe"
DEMO = "demo"
HD_JOB = HD.job_kind
#: Seconds of clock difference a Stripe signature may show (Stripe's own default).
WEBHOOK_TOLERANCE = 300
#: How long an S3 presigned link handed out by /d/{token} lives: long enough to start the
#: download, short enough that the link in a browser's history is dead.
PRESIGNED_SECONDS = 300


class PaymentError(Exception):
    """A checkout that cannot be started (the message is for the buyer)."""


class WebhookRejected(Exception):
    """An event refused for good (bad signature, stale, malformed, unknown artwork): 4xx."""

    status = 400


class UnknownArtwork(WebhookRejected):
    status = 404


class DownloadGone(Exception):
    """A download link that has expired or has been used up."""


@dataclass(frozen=True)
class CheckoutStart:
    """Where to send the buyer to pay."""

    url: str
    provider: str
    reference: str


# ------------------------------------------------------------------------------------------------
# checkout


def _artwork_for_sale(session: Session, public_id: str) -> Artwork | None:
    if not public_id or len(public_id) > 64 or not public_id.isalnum():
        return None
    return artwork_by_public_id(session, public_id)


def demo_mode(services: Services) -> bool:
    """Whether payments go to the local demo provider (no Stripe key configured)."""
    return not services.settings.stripe_secret_key


def start_checkout(
    services: Services,
    *,
    artwork: Any,
    amount_minor: int,
    currency: str,
    locale: str,
    base_url: str,
) -> CheckoutStart:
    """Start paying ``amount_minor`` (minor units of ``currency``) for ``artwork`` (anything
    with a ``public_id``: the preview page's :class:`~atelier.service.artworks.PreviewInfo`).

    The amount must already have passed the pricing checks; a pending sale is recorded so the
    receipt page can say "awaiting payment".
    """
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or amount_minor <= 0:
        raise PaymentError("choose an amount to pay")
    currency = (currency or "").upper()
    if len(currency) != 3 or not currency.isalpha():
        raise PaymentError("unknown currency")
    locale = i18n.normalize(locale)
    base_url = base_url.rstrip("/")
    with transaction(services.engine, read_only=True) as session:
        row = _artwork_for_sale(session, str(getattr(artwork, "public_id", artwork)))
        if row is None:
            raise PaymentError("this artwork does not exist")
        if row.status in ArtworkStatus.SOLD:
            raise PaymentError("this artwork is already paid for")
        if row.status != ArtworkStatus.PREVIEW_READY:
            raise PaymentError("this artwork is not ready yet")
        public_id, token, email, style = row.public_id, row.preview_token, row.owner_email, row.style
    entry = services.catalog.get(style)
    title = entry.title(locale) if entry is not None else style
    if demo_mode(services):
        provider, reference = DEMO, f"demo_{new_token()}"
        url = f"{base_url}/{locale}/demo-checkout/{reference}"
    else:
        provider = STRIPE
        reference, url = _stripe_session(
            services,
            public_id=public_id,
            amount_minor=amount_minor,
            currency=currency,
            locale=locale,
            email=email,
            title=title,
            success_url=f"{base_url}{receipt_path(public_id, locale)}",
            cancel_url=f"{base_url}/{locale}/a/{token}",
        )
    with transaction(services.engine) as session:
        artwork_id = artwork_id_of(session, public_id)
        session.add(
            Sale(
                artwork_id=artwork_id,
                amount_minor=amount_minor,
                currency=currency,
                provider=provider,
                provider_ref=reference,
                status="pending",
            )
        )
    log.info("artwork %s: checkout %s %s %d %s", public_id, provider, reference, amount_minor, currency)
    return CheckoutStart(url=url, provider=provider, reference=reference)


def stripe_client(services: Services) -> Any:
    """A Stripe client on ``ATELIER_STRIPE_SECRET_KEY`` (and ``ATELIER_STRIPE_API_BASE``)."""
    stripe = need("stripe")

    settings = services.settings
    assert settings.stripe_secret_key
    bases = {"api": settings.stripe_api_base.rstrip("/")} if settings.stripe_api_base else None
    return stripe.StripeClient(settings.stripe_secret_key, base_addresses=bases, max_network_retries=2)  # type: ignore[arg-type]


def _stripe_session(
    services: Services,
    *,
    public_id: str,
    amount_minor: int,
    currency: str,
    locale: str,
    email: str,
    title: str,
    success_url: str,
    cancel_url: str,
) -> tuple[str, str]:
    stripe = need("stripe")

    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": currency.lower(),
                    "unit_amount": amount_minor,
                    "product_data": {"name": f"Atelier: {title}"},
                },
            }
        ],
        "client_reference_id": public_id,
        "metadata": {"artwork_id": public_id},
        "customer_email": email,
        "locale": locale,
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    try:
        session = stripe_client(services).v1.checkout.sessions.create(params=params)
    except stripe.StripeError as exc:
        log.error("Stripe refused a checkout session for %s: %s", public_id, exc)
        raise PaymentError("the payment service is not answering; please try again in a moment") from exc
    return str(session.id), str(session.url)


# ------------------------------------------------------------------------------------------------
# recording a payment: the webhook and the demo provider


def record_payment(
    services: Services,
    *,
    provider: str,
    event_id: str,
    event_type: str,
    artwork_public_id: str,
    provider_ref: str,
    amount_minor: int,
    currency: str,
) -> str:
    """Record a completed payment, once per event: ``recorded``, or ``duplicate`` (the event,
    or another one for the same payment, was handled before; nothing changes).

    One transaction: the processed event, the sale (paid), the artwork (paid) and its HD job.
    :class:`UnknownArtwork` when the artwork does not exist (nothing is written). A second
    payment for an artwork already paid for is recorded as a sale but paints nothing again.
    """
    with transaction(services.engine) as session:
        artwork = artwork_by_public_id(session, artwork_public_id, for_update=True) if artwork_public_id and len(artwork_public_id) <= 64 else None
        if artwork is None:
            raise UnknownArtwork(f"no artwork {artwork_public_id!r}")
        now = utcnow()
        fresh = insert_new(
            session,
            ProcessedEvent.__table__,
            {"provider": provider, "event_id": event_id, "event_type": event_type, "received_at": now},
            unique=["provider", "event_id"],
        )
        if not fresh:
            log.info("%s event %s already handled", provider, event_id)
            return "duplicate"
        sale = sale_by_reference(session, provider, provider_ref)
        if sale is not None and sale.status == "paid":
            return "duplicate"
        if sale is None:
            sale = Sale(artwork_id=artwork.id, provider=provider, provider_ref=provider_ref)
            session.add(sale)
        elif sale.artwork_id != artwork.id:
            raise WebhookRejected(f"{provider} payment {provider_ref} belongs to another artwork")
        sale.amount_minor = amount_minor
        sale.currency = currency.upper()
        sale.status = "paid"
        sale.paid_at = now
        if artwork.status in ArtworkStatus.SOLD:
            log.warning("artwork %s paid again (%s %s): sale recorded, nothing repainted", artwork.public_id, provider, provider_ref)
            return "recorded"
        move(artwork, Event.PAID)
        artwork.paid_at = now
        # The HD picture painted ahead (or being painted) becomes the paid one; else a new job.
        job_id = queue_paid_hd(session, artwork)
    log.info("artwork %s paid: %d %s via %s (%s); HD job %d", artwork_public_id, amount_minor, currency, provider, provider_ref, job_id)
    return "recorded"


def handle_stripe_webhook(services: Services, *, payload: bytes, signature: str | None) -> str:
    """Check and handle one Stripe webhook delivery: ``recorded``, ``duplicate`` or ``ignored``.

    :class:`WebhookRejected` for a bad signature, a stale timestamp, a malformed body or an
    unknown artwork (answer 4xx: no retry helps); database errors propagate (answer 5xx: Stripe
    retries, and the event is recorded by a later delivery).
    """
    stripe = need("stripe")

    secret = services.settings.stripe_webhook_secret
    if not secret:
        raise WebhookRejected("ATELIER_STRIPE_WEBHOOK_SECRET is not set; refusing every event")
    try:
        stripe.Webhook.construct_event(payload, signature, secret, tolerance=WEBHOOK_TOLERANCE)
    except stripe.SignatureVerificationError as exc:
        raise WebhookRejected(f"signature refused: {exc}") from exc
    except ValueError as exc:
        raise WebhookRejected(f"malformed event: {exc}") from exc
    try:
        event = json.loads(payload)
        event_id, event_type = event["id"], event["type"]
        if not isinstance(event_id, str) or not isinstance(event_type, str):
            raise TypeError("id and type must be strings")
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookRejected(f"malformed event: {exc}") from exc
    if event_type not in CHECKOUT_EVENTS:
        log.info("Stripe event %s (%s) ignored", event_id, event_type)
        return "ignored"
    paid, public_id, session_id, amount, currency = _checkout_fields(event)
    fields = {
        "provider": STRIPE,
        "event_id": event_id,
        "event_type": event_type,
        "artwork_public_id": public_id,
        "provider_ref": session_id,
        "amount_minor": amount,
        "currency": currency,
    }
    if event_type == ASYNC_FAILED:
        return record_failed_payment(services, **fields)
    if not paid:
        # Delayed payment methods (vouchers, bank transfers) complete the session unpaid; the
        # money arrives days later as async_payment_succeeded (or never: ..._failed).
        log.info("Stripe checkout %s completed unpaid; waiting for the payment", session_id)
        return record_pending_payment(services, **fields)
    return record_payment(services, **fields)


#: The checkout session's events: completed (paid at once, or unpaid for a delayed method), and
#: a delayed method's outcome.
COMPLETED = "checkout.session.completed"
ASYNC_SUCCEEDED = "checkout.session.async_payment_succeeded"
ASYNC_FAILED = "checkout.session.async_payment_failed"
CHECKOUT_EVENTS = frozenset({COMPLETED, ASYNC_SUCCEEDED, ASYNC_FAILED})


def _checkout_fields(event: dict[str, Any]) -> tuple[bool, str, str, int, str]:
    """(paid, artwork public id, session id, amount in minor units, currency) of a checkout
    session event; :class:`WebhookRejected` when the session object is malformed."""
    try:
        checkout = event["data"]["object"]
        paid = checkout.get("payment_status") == "paid"
        public_id = checkout.get("client_reference_id") or (checkout.get("metadata") or {}).get("artwork_id")
        session_id, amount, currency = checkout["id"], checkout["amount_total"], checkout["currency"]
        if not (isinstance(public_id, str) and isinstance(session_id, str) and isinstance(currency, str)):
            raise TypeError("client_reference_id, id and currency must be strings")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise TypeError("amount_total must be a whole number of minor units")
    except (KeyError, TypeError, AttributeError) as exc:
        raise WebhookRejected(f"malformed checkout session: {exc}") from exc
    return paid, public_id, session_id, amount, currency


def _unpaid_sale(
    session: Session,
    *,
    provider: str,
    event_id: str,
    event_type: str,
    artwork_public_id: str,
    provider_ref: str,
    amount_minor: int,
    currency: str,
    status: str,
) -> tuple[Artwork, Sale] | None:
    """The event remembered and the session's sale set to ``status`` ("processing" or "failed"), in
    ``session``'s transaction; None (nothing changed) for an event seen before or a sale that is
    already paid. :class:`UnknownArtwork` when there is no such artwork."""
    artwork = artwork_by_public_id(session, artwork_public_id, for_update=True) if artwork_public_id and len(artwork_public_id) <= 64 else None
    if artwork is None:
        raise UnknownArtwork(f"no artwork {artwork_public_id!r}")
    fresh = insert_new(
        session,
        ProcessedEvent.__table__,
        {"provider": provider, "event_id": event_id, "event_type": event_type, "received_at": utcnow()},
        unique=["provider", "event_id"],
    )
    if not fresh:
        log.info("%s event %s already handled", provider, event_id)
        return None
    sale = sale_by_reference(session, provider, provider_ref)
    if sale is None:
        sale = Sale(artwork_id=artwork.id, provider=provider, provider_ref=provider_ref)
        session.add(sale)
    elif sale.artwork_id != artwork.id:
        raise WebhookRejected(f"{provider} payment {provider_ref} belongs to another artwork")
    elif sale.status == "paid":
        # Events can arrive out of order; a payment that arrived is never undone by them.
        log.warning("%s %s for %s, already paid: ignored", provider, event_type, provider_ref)
        return None
    sale.amount_minor = amount_minor
    sale.currency = currency.upper()
    sale.status = status
    return artwork, sale


def record_pending_payment(services: Services, **event: Any) -> str:
    """A checkout completed with a delayed payment method: the sale is ``processing`` (the
    receipt says the payment is on its way rather than asking for it again), once per event:
    ``pending`` or ``duplicate``."""
    with transaction(services.engine) as session:
        if _unpaid_sale(session, **event, status="processing") is None:
            return "duplicate"
    log.info("artwork %s: %s payment %s on its way", event["artwork_public_id"], event["provider"], event["provider_ref"])
    return "pending"


def record_failed_payment(services: Services, **event: Any) -> str:
    """A delayed payment that never arrived: the sale ``failed`` and the buyer told once (a mail
    with the preview's page, where they can pay again; the receipt page says so too), in one
    transaction: ``failed`` or ``duplicate``."""
    with transaction(services.engine) as session:
        changed = _unpaid_sale(session, **event, status="failed")
        if changed is None:
            return "duplicate"
        artwork, sale = changed
        if artwork.status in ArtworkStatus.SOLD:
            # Another payment for it went through: nothing to tell.
            return "failed"
        link = preview_link(services.public_url, artwork.preview_token, artwork.locale) if artwork.preview_token else (
            f"{services.public_url}{receipt_path(artwork.public_id, artwork.locale)}"
        )
        mail_owner(services, session, artwork, template="payment_failed", event=f"payment_failed:{sale.provider_ref}", link=link)
    log.info("artwork %s: %s payment %s failed; buyer told", event["artwork_public_id"], event["provider"], event["provider_ref"])
    return "failed"


@dataclass(frozen=True)
class DemoCheckout:
    """A pending demo payment, as its page shows it."""

    reference: str
    public_id: str
    amount_minor: int
    currency: str
    status: str


def demo_checkout(services: Services, reference: str) -> DemoCheckout | None:
    """The demo payment ``reference``, or None (also when the demo provider is off)."""
    if not demo_mode(services) or not reference.startswith("demo_") or len(reference) > 64:
        return None
    with transaction(services.engine, read_only=True) as session:
        sale = sale_by_reference(session, DEMO, reference)
        if sale is None or not hmac.compare_digest(sale.provider_ref.encode(), reference.encode()):
            return None
        artwork = session.get(Artwork, sale.artwork_id)
        assert artwork is not None  # a sale's artwork is never deleted
        public_id = artwork.public_id
        return DemoCheckout(reference, public_id, sale.amount_minor, sale.currency, sale.status)


def confirm_demo_payment(services: Services, reference: str) -> DemoCheckout | None:
    """The demo provider's "pay" button: the same path as a Stripe webhook (:func:`record_payment`),
    with the reference as the event id, so pressing it twice records one payment."""
    checkout = demo_checkout(services, reference)
    if checkout is None:
        return None
    record_payment(
        services,
        provider=DEMO,
        event_id=reference,
        event_type="demo.payment.confirmed",
        artwork_public_id=checkout.public_id,
        provider_ref=reference,
        amount_minor=checkout.amount_minor,
        currency=checkout.currency,
    )
    return checkout


# ------------------------------------------------------------------------------------------------
# receipts and downloads


@dataclass(frozen=True)
class Receipt:
    """What the receipt page shows."""

    public_id: str
    status: str
    style: str
    locale: str
    amount_minor: int | None
    currency: str | None
    provider: str | None
    sale_status: str | None
    paid_at: datetime | None
    download_expires_at: datetime | None
    downloads_left: int | None


def receipt(services: Services, public_id: str) -> Receipt | None:
    """An artwork's sale as its buyer sees it, or None if there is no such artwork."""
    with transaction(services.engine, read_only=True) as session:
        artwork = _artwork_for_sale(session, public_id)
        if artwork is None:
            return None
        sales = sales_of(session, artwork.id)
        paid = [s for s in sales if s.status == "paid"]
        sale = paid[0] if paid else (sales[-1] if sales else None)
        left = None
        if artwork.status == ArtworkStatus.DELIVERED and artwork.hd_key:
            limit = artwork.download_limit or services.settings.download_max_count
            fresh = artwork.download_expires_at is None or artwork.download_expires_at > utcnow()
            left = max(0, limit - artwork.download_count) if fresh else 0
        return Receipt(
            public_id=artwork.public_id,
            status=artwork.status,
            style=artwork.style,
            locale=artwork.locale,
            amount_minor=sale.amount_minor if sale else None,
            currency=sale.currency if sale else None,
            provider=sale.provider if sale else None,
            sale_status=sale.status if sale else None,
            paid_at=sale.paid_at if sale else None,
            download_expires_at=artwork.download_expires_at,
            downloads_left=left,
        )


@dataclass(frozen=True)
class Download:
    """One granted download: a presigned link (S3) or a blob to stream (local storage)."""

    key: str
    filename: str
    url: str | None


def use_download(services: Services, token: str) -> Download | None:
    """Spend one use of the download link ``token``: None if no such link (404),
    :class:`DownloadGone` if it expired or is used up (410)."""
    from atelier.store.blobs import S3BlobStore

    if not token or len(token) > 64:
        return None
    with transaction(services.engine) as session:
        artwork = artwork_of_download(session, token)
        if artwork is None or not hmac.compare_digest(artwork.download_token.encode(), token.encode()):
            return None
        if artwork.status != ArtworkStatus.DELIVERED or not artwork.hd_key:
            return None
        limit = artwork.download_limit or services.settings.download_max_count
        if not spend_download(session, artwork.id, limit=limit, now=utcnow()):
            raise DownloadGone(f"download link of artwork {artwork.public_id} expired or used up")
        key, style, public_id = artwork.hd_key, artwork.style, artwork.public_id
    filename = f"atelier-{style}-{public_id[:8]}.jpg"
    url = services.blobs.presigned_get(key, expires_in=PRESIGNED_SECONDS, filename=filename) if isinstance(services.blobs, S3BlobStore) else None
    return Download(key=key, filename=filename, url=url)


__all__ = [
    "CheckoutStart",
    "DownloadGone",
    "PaymentError",
    "UnknownArtwork",
    "WebhookRejected",
    "confirm_demo_payment",
    "handle_stripe_webhook",
    "receipt",
    "record_payment",
    "start_checkout",
    "use_download",
]
