"""Sales pages and endpoints: pay for an artwork, the Stripe webhook, the demo provider's page,
receipts and HD downloads.

* ``GET /{lang}/a/{token}``: the preview behind the mailed link, with the checkout form until it
  is paid for, then the way to the receipt.
* ``POST /{lang}/a/{token}/pay``: the preview page's checkout form. The amount is parsed and
  checked against its currency's minimum here, on the server (the form's ``min`` is only a
  convenience); a refused amount redirects to the preview page with what was typed, which
  checks it again and says why (POST-redirect-GET: Back from the provider's page never asks to
  send the form again). Then 303 to the provider.
* ``POST /api/v1/payments/stripe/webhook``: the raw body goes to
  :func:`atelier.service.payments.handle_stripe_webhook`. Refused events answer 4xx (Stripe
  stops retrying); a database that is down answers 503 (Stripe retries, nothing is lost).
* ``/{lang}/demo-checkout/{ref}``: the local demo provider (only without a Stripe key).
* ``/{lang}/receipts/{artwork id}``: the state of the sale (the download link itself is only mailed).
* ``GET /d/{token}``: the HD picture; 410 with a friendly page once expired or used up.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from atelier.service import i18n, payments
from atelier.service.artworks import ArtworkStatus, artwork_by_preview_token, get_artwork
from atelier.service.context import Services
from atelier.store.errors import StoreError
from atelier.web.deps import services_of
from atelier.web.pages import not_found, page_locale
from atelier.web.templating import render

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
ServicesDep = Annotated[Services, Depends(services_of)]


def _public_base(services: Services, request: Request) -> str:
    # Links the provider sends the buyer back to: the configured public address (what mails
    # use), never the request's Host header, which a client chooses.
    return services.public_url


# ------------------------------------------------------------------------------------------------
# paying


def price_context(services: Services, request: Request, locale: str) -> dict[str, Any] | None:
    """The checkout form's numbers for this buyer: their country's currency, the suggestion and
    the minimum, written for their language (None when the price table is broken: the preview
    still shows, the log says why)."""
    from atelier.service import pricing

    try:
        table = pricing.price_table_of(services.settings)
    except pricing.PriceTableError:
        log.exception("no checkout form: the price table is not valid")
        return None
    from atelier.web.security import client_ip

    # The buyer's own address for the GeoIP lookup: behind a trusted proxy, what it forwarded.
    country = pricing.country_from_request(headers=request.headers, client_ip=client_ip(request) or None, settings=services.settings)
    price = pricing.price_for(country=country, table=table)
    shown = pricing.display_locale(locale, country)
    return {
        "currency": price.currency,
        "country": country or "",
        "suggested": pricing.format_amount(price.suggested_minor, currency=price.currency, locale=shown, exponent=price.exponent),
        "minimum": pricing.format_amount(price.minimum_minor, currency=price.currency, locale=shown, exponent=price.exponent),
        "value": pricing.input_amount(price.suggested_minor, exponent=price.exponent, locale=shown),
        "minimum_minor": price.minimum_minor,
    }


def _price_for_currency(services: Services, request: Request, currency: str) -> Any:
    """The buyer's price, if ``currency`` is the one their page offers (else None).

    Only the currency of the buyer's own country is taken: accepting any currency in the table
    would let a buyer pick the one with the lowest minimum. The country comes from the same
    trusted headers, GeoIP address and Accept-Language as the form's.
    """
    from atelier.service import pricing
    from atelier.web.security import client_ip

    table = pricing.price_table_of(services.settings)
    country = pricing.country_from_request(headers=request.headers, client_ip=client_ip(request) or None, settings=services.settings)
    price = pricing.price_for(country=country, table=table)
    if (currency or "").strip().upper() != price.currency:
        return None, country
    return price, country


def _checked_amount(services: Services, request: Request, locale: str, amount: str, currency: str) -> tuple[Any, int | None, str | None]:
    """``(price, amount in minor units, None)`` for an amount that can be taken, else
    ``(price, None, the reason in the page's language)``."""
    from atelier.service import pricing

    _ = i18n.translations(locale).gettext
    price, country = _price_for_currency(services, request, currency)
    if price is None:
        return None, None, _("Please choose an amount in one of the currencies offered.")
    try:
        minor = pricing.parse_amount(amount, currency=price.currency, locale=pricing.display_locale(locale, country), exponent=price.exponent)
        pricing.check_amount(minor, price)
    except pricing.PricingError as exc:
        return price, None, exc.message_for(locale)
    return price, minor, None


def _preview_page(services: Services, request: Request, locale: str, token: str, info: Any, *, typed: str = "", error: str | None = None) -> Response:
    """The preview page: the picture, then the checkout form -- or, once paid, the receipt."""
    entry = services.catalog.get(info.style)
    sold = info.status in ArtworkStatus.SOLD
    price = price_context(services, request, locale) if info.status == ArtworkStatus.PREVIEW_READY else None
    if price is not None and typed:
        price = dict(price, value=typed[:32])
    return render(
        request,
        "preview.html",
        locale,
        headers={"Referrer-Policy": "no-referrer"},
        image_url=f"/a/{token}/preview.jpg",
        width=info.width,
        height=info.height,
        style_title=entry.title(locale) if entry is not None else info.style,
        artist=entry.artist if entry is not None else None,
        price=price,
        pay_url=f"/{locale}/a/{token}/pay",
        error=error,
        sold=sold,
        delivered=info.status == ArtworkStatus.DELIVERED,
        receipt_url=payments.receipt_path(info.public_id, locale),
    )


#: Why a checkout could not start, carried by the redirect back to the preview page.
PROVIDER_FAILED = "provider"


@router.get("/{lang}/a/{token}")
async def preview_page(
    services: ServicesDep, request: Request, lang: str, token: str, amount: str | None = None, currency: str = "", problem: str = ""
) -> Response:
    """The watermarked artwork behind the mailed link. ``amount`` (with ``currency``) is what a
    refused checkout form held: it is checked again, and the form shows it with the reason."""
    locale = page_locale(lang)
    info = await run_in_threadpool(artwork_by_preview_token, services, token)
    if info is None or info.status not in (ArtworkStatus.PREVIEW_READY,) and not info.preview_key:
        return not_found(request, locale)
    error = None
    if info.status == ArtworkStatus.PREVIEW_READY:
        if problem == PROVIDER_FAILED:
            error = i18n.gettext(locale, "The payment could not be started. Please try again in a moment.")
        elif amount is not None:
            error = _checked_amount(services, request, locale, amount, currency)[2]
    return _preview_page(services, request, locale, token, info, typed=amount or "", error=error)


@router.post("/{lang}/a/{token}/pay")
def pay(
    services: ServicesDep,
    request: Request,
    lang: str,
    token: str,
    amount: Annotated[str, Form()] = "",
    currency: Annotated[str, Form()] = "",
) -> Response:
    """The checkout form: check the amount on the server, start the checkout, send the buyer on
    (or back to the preview page, which says what was wrong)."""
    locale = page_locale(lang)  # an unknown language: the app's localised 404 (pages.install)
    info = artwork_by_preview_token(services, token)
    if info is None:
        return not_found(request, locale)
    if info.status in ArtworkStatus.SOLD:
        return RedirectResponse(payments.receipt_path(info.public_id, locale), status_code=303)
    if info.status != ArtworkStatus.PREVIEW_READY:
        return not_found(request, locale)
    back = f"/{locale}/a/{token}"
    price, minor, error = _checked_amount(services, request, locale, amount, currency)
    if error is not None:
        return RedirectResponse(f"{back}?{urlencode({'amount': amount[:32], 'currency': currency[:8]})}#checkout", status_code=303)
    try:
        started = payments.start_checkout(
            services, artwork=info, amount_minor=minor, currency=price.currency, locale=locale, base_url=_public_base(services, request)
        )
    except payments.PaymentError as exc:
        log.warning("checkout for %s not started: %s", info.public_id, exc)
        return RedirectResponse(f"{back}?{urlencode({'amount': amount[:32], 'problem': PROVIDER_FAILED})}#checkout", status_code=303)
    return RedirectResponse(started.url, status_code=303)


@router.get("/{lang}/demo-checkout/{reference}")
def demo_checkout_page(services: ServicesDep, request: Request, lang: str, reference: str) -> Response:
    """The demo provider's "payment" page: clearly not a real payment."""
    from atelier.service import pricing

    locale = page_locale(lang)
    checkout = payments.demo_checkout(services, reference)
    if checkout is None:
        return not_found(request, locale)
    return render(
        request,
        "demo_checkout.html",
        locale,
        headers={"Referrer-Policy": "no-referrer"},
        amount=pricing.format_amount(checkout.amount_minor, currency=checkout.currency, locale=locale),
        confirm_url=f"/{locale}/demo-checkout/{reference}",
        paid=checkout.status == "paid",
        receipt_url=payments.receipt_path(checkout.public_id, locale),
        back_url=_preview_page_url(services, checkout.public_id, locale),
    )


def _preview_page_url(services: Services, public_id: str, locale: str) -> str:
    """The artwork's preview page (where the buyer came from), else its receipt."""
    view = get_artwork(services, public_id)
    public = view.public(services, locale=locale) if view is not None else {}
    return public.get("preview_page_url") or payments.receipt_path(public_id, locale)


@router.post("/{lang}/demo-checkout/{reference}")
def demo_checkout_confirm(services: ServicesDep, request: Request, lang: str, reference: str) -> Response:
    """The demo provider's confirm button: records the payment as a webhook would."""
    locale = page_locale(lang)
    checkout = payments.confirm_demo_payment(services, reference)
    if checkout is None:
        return not_found(request, locale)
    return RedirectResponse(payments.receipt_path(checkout.public_id, locale), status_code=303)


# ------------------------------------------------------------------------------------------------
# the webhook


@router.post("/api/v1/payments/stripe/webhook")
async def stripe_webhook(services: ServicesDep, request: Request) -> Response:
    """Stripe's events, signed: ``checkout.session.completed`` records a payment."""
    payload = await request.body()
    signature = request.headers.get("stripe-signature")
    try:
        outcome = await run_in_threadpool(payments.handle_stripe_webhook, services, payload=payload, signature=signature)
    except payments.WebhookRejected as exc:
        log.warning("Stripe webhook refused (%d): %s", exc.status, exc)
        return JSONResponse({"error": {"code": "refused", "message": str(exc)}}, status_code=exc.status)
    except (SQLAlchemyError, StoreError, OSError) as exc:
        # Stripe retries 5xx for days: the event is recorded by a later delivery.
        log.error("Stripe webhook not recorded, the database is unavailable: %s", exc)
        return JSONResponse(
            {"error": {"code": "unavailable", "message": "try again later"}}, status_code=503, headers={"Retry-After": "30"}
        )
    return JSONResponse({"received": True, "outcome": outcome})


# ------------------------------------------------------------------------------------------------
# receipts and downloads


@router.get("/{lang}/receipts/{artwork_id}")
def receipt_page(services: ServicesDep, request: Request, lang: str, artwork_id: str) -> Response:
    """Where the sale stands: awaiting payment, a delayed payment on its way or failed, paid,
    painting the HD version, delivered."""
    from atelier.service import pricing

    locale = page_locale(lang)
    view = payments.receipt(services, artwork_id)
    if view is None:
        return not_found(request, locale)
    entry = services.catalog.get(view.style)
    amount = None
    if view.amount_minor is not None and view.currency:
        amount = pricing.format_amount(view.amount_minor, currency=view.currency, locale=locale)
    if view.status == ArtworkStatus.DELIVERED:
        state = "delivered"
    elif view.status in (ArtworkStatus.PAID, ArtworkStatus.HD_PAINTING):
        state = view.status
    elif view.sale_status == "processing":
        state = "processing"  # a voucher or bank transfer on its way: do not ask for it again
    elif view.sale_status == "failed":
        state = "payment_failed"
    else:
        state = "awaiting"
    # The picture: the preview the buyer chose, or the HD version as it grows (the status API
    # describes the HD job while it paints, when it tells which job it follows).
    artwork = get_artwork(services, view.public_id)
    public = artwork.public(services, locale=locale) if artwork is not None else {}
    picture = f"/a/{artwork.preview_token}/preview.jpg" if artwork is not None and artwork.preview_token else None
    job = public.get("job") or {}
    hd = job.get("phase") == "hd" and state in ("paid", "hd_painting")
    return render(
        request,
        "receipt.html",
        locale,
        headers={"Referrer-Policy": "no-referrer"},
        state=state,
        final=state in ("delivered", "payment_failed"),  # nothing will change by itself: no refresh
        style_title=entry.title(locale) if entry is not None else view.style,
        amount=amount,
        demo=view.provider == payments.DEMO,
        downloads_left=view.downloads_left,
        expires=view.download_expires_at.strftime("%Y-%m-%d %H:%M UTC") if view.download_expires_at else None,
        picture_url=(public.get("progress_image_url") if hd else None) or picture,
        preview_page_url=public.get("preview_page_url"),
        status_url=public.get("status_url"),
        hd=hd,
        # The caption says which picture it is: the HD as it grows only once it has one.
        hd_picture=bool(hd and public.get("progress_image_url")),
        # The HD job's own fraction (the API's "progress" is the whole commission's).
        progress=job.get("progress") if hd else None,
        stage_text=public.get("stage_text") if hd else None,
    )


@router.get("/d/{token}")
def download(services: ServicesDep, request: Request, token: str) -> Response:
    """The HD picture: streamed from local storage, or a short-lived presigned S3 link."""
    locale = i18n.negotiate(request.headers.get("accept-language"))
    try:
        grant = payments.use_download(services, token)
    except payments.DownloadGone:
        return render(request, "download_gone.html", locale, status_code=410, headers={"Referrer-Policy": "no-referrer"})
    if grant is None:
        return not_found(request, locale)
    if grant.url is not None:
        return RedirectResponse(grant.url, status_code=303, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
    blob = services.blobs.open(grant.key)

    def chunks() -> Any:
        with blob:
            while chunk := blob.read(1 << 16):
                yield chunk

    size = services.blobs.stat(grant.key).size
    return StreamingResponse(
        chunks(),
        media_type="image/jpeg",
        headers={
            "Content-Disposition": f'attachment; filename="{grant.filename}"',
            "Content-Length": str(size),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )
