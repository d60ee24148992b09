"""Payments: Stripe webhooks signed with Stripe's own scheme (computed here, not by stripe's
helper), recorded once per event in one transaction; the HD job; download links that expire
and run out."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from atelier.service import payments
from atelier.service.artworks import ArtworkStatus, order_artwork
from atelier.service.context import Services
from atelier.service.worker import Worker
from atelier.store.db import Artwork, Job, OutboxEmail, ProcessedEvent, Sale, transaction, utcnow

from tests.service.service_fixtures import add_catalog_style, make_settings, microast_painter, small_jpeg

SECRET = "whsec_test_3c1b0e8f2a"


def stripe_signature(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """``Stripe-Signature`` as Stripe computes it: HMAC-SHA256 of ``"{t}.{body}"`` under the
    endpoint's secret."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def completed_event(
    public_id: str,
    *,
    event_id: str = "evt_1",
    session_id: str = "cs_test_1",
    amount: int = 500,
    currency: str = "usd",
    event_type: str = "checkout.session.completed",
    payment_status: str = "paid",
) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "data": {
                "object": {
                    "id": session_id,
                    "object": "checkout.session",
                    "client_reference_id": public_id,
                    "metadata": {"artwork_id": public_id},
                    "payment_status": payment_status,
                    "amount_total": amount,
                    "currency": currency,
                }
            },
        }
    ).encode()


@pytest.fixture
def services(tmp_path: Path, models_dir: Path, style_dir: Path) -> Iterator[Services]:
    settings = make_settings(tmp_path, models_dir, stripe_webhook_secret=SECRET, preview_max_size=96)
    add_catalog_style(settings, style_dir, passes="48x4,96x4")
    services = Services.open(settings, public_url="https://atelier.test")
    services.painter = microast_painter(services, steps=1)
    yield services
    services.close()


@pytest.fixture(scope="module")
def photo(content_dir: Path) -> bytes:
    return small_jpeg(content_dir / "dog.jpg", 160)


def ready_artwork(services: Services, photo: bytes, *, paint: bool = True) -> str:
    """An ordered artwork whose preview is ready: its preview job run by a real worker, or
    (``paint=False``, for tests of the payment alone) only marked ready."""
    view = order_artwork(services, style_name="starry_night", email="ana@example.com", locale="es", content=photo)
    if paint:
        assert Worker(services, worker_id="w-preview").run_once() == "done"
    else:
        with transaction(services.engine) as session:
            session.execute(
                update(Artwork).where(Artwork.public_id == view.id).values(status=ArtworkStatus.PREVIEW_READY, preview_key=f"previews/{view.id}.jpg")
            )
    with transaction(services.engine, read_only=True) as session:
        assert session.scalars(select(Artwork.status).where(Artwork.public_id == view.id)).one() == ArtworkStatus.PREVIEW_READY
    return view.id


def state(services: Services, public_id: str) -> dict[str, object]:
    with transaction(services.engine, read_only=True) as session:
        count = lambda model: int(session.scalar(select(func.count()).select_from(model)) or 0)  # noqa: E731
        return {
            "status": session.scalars(select(Artwork.status).where(Artwork.public_id == public_id)).one(),
            "sales": count(Sale),
            "events": count(ProcessedEvent),
            "hd_jobs": int(session.scalar(select(func.count()).where(Job.kind == payments.HD_JOB)) or 0),
            "mails": count(OutboxEmail),
        }


def deliver(services: Services, body: bytes, signature: str) -> str:
    return payments.handle_stripe_webhook(services, payload=body, signature=signature)


def test_a_signed_completed_checkout_records_the_sale_marks_paid_and_queues_the_hd_job(services: Services, photo: bytes) -> None:
    public_id = ready_artwork(services, photo, paint=False)
    before = state(services, public_id)
    body = completed_event(public_id, amount=1250, currency="mxn")
    assert deliver(services, body, stripe_signature(body, SECRET)) == "recorded"
    after = state(services, public_id)
    assert after["status"] == ArtworkStatus.PAID
    assert after["sales"] == 1 and after["events"] == 1 and after["hd_jobs"] == 1
    assert after["mails"] == before["mails"]  # the mail comes with the HD picture, not before
    with transaction(services.engine, read_only=True) as session:
        sale = session.scalars(select(Sale)).one()
        assert (sale.amount_minor, sale.currency, sale.provider, sale.provider_ref, sale.status) == (1250, "MXN", "stripe", "cs_test_1", "paid")


def test_the_same_event_delivered_twice_makes_one_sale_one_job(services: Services, photo: bytes) -> None:
    public_id = ready_artwork(services, photo, paint=False)
    body = completed_event(public_id)
    assert deliver(services, body, stripe_signature(body, SECRET)) == "recorded"
    once = state(services, public_id)
    assert deliver(services, body, stripe_signature(body, SECRET)) == "duplicate"
    # Another event about the same checkout session (Stripe may send one) changes nothing either.
    other = completed_event(public_id, event_id="evt_2")
    assert deliver(services, other, stripe_signature(other, SECRET)) == "duplicate"
    assert state(services, public_id) == once | {"events": 2}
    assert once["sales"] == 1 and once["hd_jobs"] == 1


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda body: (body.replace(b'"amount_total": 500', b'"amount_total": 1'), stripe_signature(body, SECRET)), id="tampered-body"),
        pytest.param(lambda body: (body, stripe_signature(body, "whsec_someone_else")), id="wrong-secret"),
        pytest.param(lambda body: (body, stripe_signature(body, SECRET, timestamp=int(time.time()) - 301)), id="stale-timestamp"),
        pytest.param(lambda body: (body, "t=1,v1=00"), id="garbage-signature"),
        pytest.param(lambda body: (body, None), id="no-signature"),
    ],
)
def test_a_forged_or_stale_delivery_is_refused_and_changes_nothing(services: Services, photo: bytes, forge) -> None:  # type: ignore[no-untyped-def]
    public_id = ready_artwork(services, photo, paint=False)
    before = state(services, public_id)
    body, signature = forge(completed_event(public_id))
    with pytest.raises(payments.WebhookRejected) as refused:
        deliver(services, body, signature)
    assert 400 <= refused.value.status < 500
    assert state(services, public_id) == before


def test_a_timestamp_within_the_tolerance_is_accepted(services: Services, photo: bytes) -> None:
    public_id = ready_artwork(services, photo, paint=False)
    body = completed_event(public_id)
    assert deliver(services, body, stripe_signature(body, SECRET, timestamp=int(time.time()) - 240)) == "recorded"


def test_an_event_for_an_unknown_artwork_is_refused_and_not_remembered(services: Services, photo: bytes) -> None:
    public_id = ready_artwork(services, photo, paint=False)
    before = state(services, public_id)
    body = completed_event("0" * 32)
    with pytest.raises(payments.UnknownArtwork) as refused:
        deliver(services, body, stripe_signature(body, SECRET))
    assert refused.value.status == 404
    assert state(services, public_id) == before


def test_other_event_types_are_acknowledged_and_ignored_and_malformed_sessions_refused(services: Services, photo: bytes) -> None:
    public_id = ready_artwork(services, photo, paint=False)
    before = state(services, public_id)
    other = json.dumps({"id": "evt_9", "type": "payment_intent.created", "data": {"object": {}}}).encode()
    assert deliver(services, other, stripe_signature(other, SECRET)) == "ignored"
    for kind in (payments.ASYNC_SUCCEEDED, payments.ASYNC_FAILED):
        bad = json.dumps({"id": "evt_4", "type": kind, "data": {"object": {"id": "cs_1", "client_reference_id": public_id}}}).encode()
        with pytest.raises(payments.WebhookRejected):
            deliver(services, bad, stripe_signature(bad, SECRET))
    malformed = b'{"id": "evt_3", "type": "checkout.session.completed", "data": {"object": {"id": 7}}}'
    with pytest.raises(payments.WebhookRejected):
        deliver(services, malformed, stripe_signature(malformed, SECRET))
    assert state(services, public_id) == before


def signed(services: Services, body: bytes) -> str:
    return deliver(services, body, stripe_signature(body, SECRET))


def download_mails(services: Services) -> int:
    with transaction(services.engine, read_only=True) as session:
        return int(session.scalar(select(func.count()).where(OutboxEmail.dedupe_key.like("artwork:%:download"))) or 0)


def test_a_delayed_payment_that_succeeds_paints_one_hd_version_and_mails_one_link(services: Services, photo: bytes) -> None:
    """A voucher or bank transfer (OXXO, boleto): the session completes unpaid, the money comes
    days later as ``async_payment_succeeded``; that event (delivered again and again) makes one
    HD job and, once painted, one mail."""
    public_id = ready_artwork(services, photo)
    waiting = completed_event(public_id, event_id="evt_a1", session_id="cs_voucher", amount=9900, currency="mxn", payment_status="unpaid")
    assert signed(services, waiting) == "pending"
    on_its_way = state(services, public_id)
    assert on_its_way["status"] == ArtworkStatus.PREVIEW_READY and on_its_way["hd_jobs"] == 0
    assert payments.receipt(services, public_id).sale_status == "processing"  # type: ignore[union-attr]
    arrived = completed_event(public_id, event_id="evt_a2", session_id="cs_voucher", amount=9900, currency="mxn", event_type=payments.ASYNC_SUCCEEDED)
    assert signed(services, arrived) == "recorded"
    assert signed(services, arrived) == "duplicate"  # Stripe delivers again
    assert signed(services, waiting) == "duplicate"
    paid = state(services, public_id)
    assert paid["status"] == ArtworkStatus.PAID and paid["hd_jobs"] == 1 and paid["sales"] == 1
    with transaction(services.engine, read_only=True) as session:
        sale = session.scalars(select(Sale)).one()
        assert (sale.status, sale.amount_minor, sale.currency, sale.provider_ref) == ("paid", 9900, "MXN", "cs_voucher")
    assert Worker(services, worker_id="w-hd").run_once() == "done"
    assert signed(services, arrived) == "duplicate"  # and once more after delivery
    assert state(services, public_id)["hd_jobs"] == 1 and download_mails(services) == 1
    assert state(services, public_id)["status"] == ArtworkStatus.DELIVERED
    # A late "failed" for the same session (events can come out of order) undoes nothing.
    late = completed_event(public_id, event_id="evt_a3", session_id="cs_voucher", amount=9900, currency="mxn", event_type=payments.ASYNC_FAILED, payment_status="unpaid")
    assert signed(services, late) == "duplicate"
    assert state(services, public_id)["mails"] == paid["mails"] + 1  # only the download's


def test_a_delayed_payment_that_fails_tells_the_buyer_once_and_they_can_pay_again(services: Services, photo: bytes) -> None:
    public_id = ready_artwork(services, photo, paint=False)
    started = state(services, public_id)
    assert signed(services, completed_event(public_id, event_id="evt_f1", session_id="cs_transfer", payment_status="unpaid")) == "pending"
    failed = completed_event(public_id, event_id="evt_f2", session_id="cs_transfer", event_type=payments.ASYNC_FAILED, payment_status="unpaid")
    assert signed(services, failed) == "failed"
    assert signed(services, failed) == "duplicate"
    after = state(services, public_id)
    assert after["status"] == ArtworkStatus.PREVIEW_READY and after["hd_jobs"] == 0 and after["mails"] == started["mails"] + 1
    with transaction(services.engine, read_only=True) as session:
        artwork = session.scalars(select(Artwork).where(Artwork.public_id == public_id)).one()
        mail = session.scalars(select(OutboxEmail).where(OutboxEmail.dedupe_key == f"artwork:{artwork.id}:payment_failed:cs_transfer")).one()
        assert mail.to_addr == "ana@example.com" and mail.subject == "Tu pago no se ha completado"
        assert f"https://atelier.test/es/a/{artwork.preview_token}" in mail.text_body  # where they pay again
        assert session.scalars(select(Sale.status)).one() == "failed"
    assert payments.receipt(services, public_id).sale_status == "failed"  # type: ignore[union-attr]
    # Paying again, at once this time, goes through as usual.
    again = completed_event(public_id, event_id="evt_f3", session_id="cs_card")
    assert signed(services, again) == "recorded"
    assert state(services, public_id)["status"] == ArtworkStatus.PAID and state(services, public_id)["hd_jobs"] == 1


def test_without_a_webhook_secret_every_event_is_refused(services: Services, photo: bytes) -> None:
    public_id = ready_artwork(services, photo, paint=False)
    services.settings.stripe_webhook_secret = None
    body = completed_event(public_id)
    with pytest.raises(payments.WebhookRejected):
        deliver(services, body, stripe_signature(body, SECRET))


def test_the_hd_job_paints_without_the_mark_doubles_the_size_and_mails_one_link(services: Services, photo: bytes) -> None:
    from PIL import Image
    import io

    public_id = ready_artwork(services, photo)
    body = completed_event(public_id)
    deliver(services, body, stripe_signature(body, SECRET))
    assert Worker(services, worker_id="w-hd").run_once() == "done"
    with transaction(services.engine, read_only=True) as session:
        artwork = session.scalars(select(Artwork).where(Artwork.public_id == public_id)).one()
        assert artwork.status == ArtworkStatus.DELIVERED and artwork.hd_key
        preview = Image.open(io.BytesIO(services.blobs.read(artwork.preview_key or "")))
        hd = Image.open(io.BytesIO(services.blobs.read(artwork.hd_key)))
        assert hd.size == (2 * preview.width, 2 * preview.height)
        mails = session.scalars(select(OutboxEmail).where(OutboxEmail.dedupe_key == f"artwork:{artwork.id}:download")).all()
        assert len(mails) == 1 and f"https://atelier.test/d/{artwork.download_token}" in mails[0].text_body
        assert mails[0].subject == "Tu obra en alta resolución"
        token = artwork.download_token
    # The job running again (at-least-once) mails nothing more and keeps the link's uses.
    assert payments.use_download(services, token) is not None
    with transaction(services.engine) as session:
        job_id = session.scalars(select(Job.id).where(Job.kind == payments.HD_JOB)).one()
        session.execute(update(Job).where(Job.id == job_id).values(status="queued", lease_owner=None))
    assert Worker(services, worker_id="w-hd2").run_once() == "done"
    assert state(services, public_id)["mails"] == 2  # the preview's and one download mail
    with transaction(services.engine, read_only=True) as session:
        assert session.scalars(select(Artwork.download_count).where(Artwork.public_id == public_id)).one() == 1


def test_an_hd_job_that_fails_for_good_tells_the_buyer_once_and_a_retry_delivers(services: Services, photo: bytes) -> None:
    from atelier.service import admin

    public_id = ready_artwork(services, photo)
    body = completed_event(public_id)
    deliver(services, body, stripe_signature(body, SECRET))
    painter = services.painter

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the painter fell over")

    services.painter = broken  # type: ignore[assignment]
    with transaction(services.engine) as session:  # the next attempt is the last one
        session.execute(update(Job).where(Job.kind == payments.HD_JOB).values(attempts=Job.max_attempts - 1))
    assert Worker(services, worker_id="w-hd").run_once() == "dead"
    with transaction(services.engine, read_only=True) as session:
        artwork = session.scalars(select(Artwork).where(Artwork.public_id == public_id)).one()
        assert artwork.status == ArtworkStatus.PAID  # still paid for: nothing is lost
        delayed = session.scalars(select(OutboxEmail).where(OutboxEmail.dedupe_key == f"artwork:{artwork.id}:hd_delayed")).all()
        assert len(delayed) == 1 and delayed[0].subject == "Tu obra en alta resolución se retrasa"
        assert f"https://atelier.test/es/receipts/{public_id}" in delayed[0].text_body
        job_id = session.scalars(select(Job.id).where(Job.kind == payments.HD_JOB)).one()
    # The operator retries it from /admin once the cause is fixed: the download mail goes out.
    services.painter = painter
    assert admin.retry_job(services, job_id)
    assert Worker(services, worker_id="w-hd2").run_once() == "done"
    assert state(services, public_id)["status"] == ArtworkStatus.DELIVERED
    assert state(services, public_id)["mails"] == 3  # preview, delayed, download


def test_a_download_link_runs_out_and_expires(services: Services, photo: bytes) -> None:
    services.settings.download_max_count = 2
    public_id = ready_artwork(services, photo)
    body = completed_event(public_id)
    deliver(services, body, stripe_signature(body, SECRET))
    assert Worker(services, worker_id="w-hd").run_once() == "done"
    with transaction(services.engine, read_only=True) as session:
        token = session.scalars(select(Artwork.download_token).where(Artwork.public_id == public_id)).one()
    other = ("y" if token[0] == "x" else "x") + token[1:]  # one character off (never the token itself)
    assert payments.use_download(services, other) is None  # not a link at all: 404
    assert payments.use_download(services, token) is not None
    assert payments.use_download(services, token) is not None
    with pytest.raises(payments.DownloadGone):
        payments.use_download(services, token)
    with transaction(services.engine) as session:
        session.execute(
            update(Artwork).where(Artwork.public_id == public_id).values(download_count=0, download_expires_at=utcnow() - timedelta(seconds=1))
        )
    with pytest.raises(payments.DownloadGone):
        payments.use_download(services, token)


def test_the_demo_provider_goes_through_the_same_path_once(services: Services, photo: bytes) -> None:
    public_id = ready_artwork(services, photo, paint=False)
    started = payments.start_checkout(services, artwork=public_id, amount_minor=700, currency="eur", locale="es", base_url="https://atelier.test")
    assert started.provider == "demo" and started.url == f"https://atelier.test/es/demo-checkout/{started.reference}"
    assert payments.receipt(services, public_id).sale_status == "pending"  # type: ignore[union-attr]
    payments.confirm_demo_payment(services, started.reference)
    payments.confirm_demo_payment(services, started.reference)  # pressed twice
    after = state(services, public_id)
    assert after["status"] == ArtworkStatus.PAID and after["sales"] == 1 and after["hd_jobs"] == 1 and after["events"] == 1
    # With a Stripe key configured the demo provider is off: its page and button do nothing.
    services.settings.stripe_secret_key = "sk_test_x"
    assert payments.demo_checkout(services, started.reference) is None


@pytest.mark.slow
def test_the_real_painter_paints_the_hd_version_unmarked_at_twice_the_full_size(services: Services, photo: bytes) -> None:
    """No quick painter: the style's Gatys recipe (tiny here, 96 px) painted for the preview with
    its mark, and again for the HD version without it, then waifu2x."""
    import io

    import numpy as np
    from PIL import Image

    from atelier.service.painting import watermark_spec

    services.painter = None
    public_id = ready_artwork(services, photo)
    started = payments.start_checkout(services, artwork=public_id, amount_minor=500, currency="USD", locale="en", base_url="https://atelier.test")
    payments.confirm_demo_payment(services, started.reference)
    assert Worker(services, worker_id="w-hd").run_once() == "done"
    with transaction(services.engine, read_only=True) as session:
        artwork = session.scalars(select(Artwork).where(Artwork.public_id == public_id)).one()
        preview = Image.open(io.BytesIO(services.blobs.read(artwork.preview_key or ""))).convert("RGB")
        hd = Image.open(io.BytesIO(services.blobs.read(artwork.hd_key or ""))).convert("RGB")
    from atelier.service.commission.job import hd_size

    assert max(preview.size) == hd_size(services, services.catalog.get("starry_night")) == 96
    assert hd.size == (2 * preview.width, 2 * preview.height)
    mark = watermark_spec(services.catalog.get("starry_night").source, True)  # type: ignore[union-attr]
    assert mark is not None
    from atelier.art.blocks.finish import watermark_layer

    small = hd.resize(preview.size, Image.Resampling.LANCZOS)
    under = np.asarray(
        watermark_layer(preview.size, text=mark.text, position=mark.position, opacity=mark.opacity, scale=mark.scale, margin=mark.margin).getchannel("A")
    ) > 0
    assert under.sum() > 20
    as_is = np.abs(np.asarray(small, np.float32) - np.asarray(preview, np.float32))[under].mean()
    remarked = np.abs(np.asarray(mark.apply(small), np.float32) - np.asarray(preview, np.float32))[under].mean()
    # Under the mark, the preview is the HD picture (shrunk) with the style's mark drawn on:
    # drawing it on the shrunk HD picture brings the two together; it had no mark of its own.
    assert remarked < 0.7 * as_is, (as_is, remarked)
