"""Sales over HTTP: the checkout form (server-side minimum), the Stripe path up to the network
boundary (a loopback server stands in for api.stripe.com and records what stripe-python sent),
the signed webhook (4xx refused, 503 while the database is down and recorded when redelivered),
and end to end on SQLite and PostgreSQL with a real SMTP server: preview -> pay (demo provider,
then Stripe + webhook) -> HD job in a real worker -> mail with /d/{token} -> the download is
exactly twice the preview and carries no watermark -> used up or expired: 410.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, select, update

from atelier.service.artworks import ArtworkStatus, order_artwork
from atelier.service.context import Services
from atelier.service.worker import Worker
from atelier.store.db import Artwork, transaction, utcnow
from atelier.web.app import create_app

from tests.service.service_fixtures import PREVIEW_MARK, add_catalog_style, free_port, link_in, make_settings, microast_painter
from tests.web.web_fixtures import LiveServer


SECRET = "whsec_web_5d7a1f"


def stripe_signature(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    import hashlib
    import hmac

    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={hmac.new(secret.encode(), f'{t}.'.encode() + body, hashlib.sha256).hexdigest()}"


def completed_event(public_id: str, *, event_id: str, session_id: str, amount: int, currency: str) -> bytes:
    checkout = {
        "id": session_id,
        "object": "checkout.session",
        "client_reference_id": public_id,
        "payment_status": "paid",
        "amount_total": amount,
        "currency": currency.lower(),
    }
    return json.dumps({"id": event_id, "object": "event", "type": "checkout.session.completed", "data": {"object": checkout}}).encode()


class FakeStripe:
    """A loopback HTTP server answering POST /v1/checkout/sessions like Stripe does, keeping
    each request's path, headers and form-encoded body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "form": parse_qs(body)})
                number = len(outer.requests)
                answer = json.dumps(
                    {"id": f"cs_test_{number}", "object": "checkout.session", "url": f"https://checkout.stripe.test/pay/cs_test_{number}"}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    server = FakeStripe()
    yield server
    server.close()


def form_fields(html: str) -> dict[str, str]:
    """The checkout form's fields as the page wrote them (the CSRF token too when there is one)."""
    form = re.search(r'<form class="checkout".*?</form>', html, re.S)
    assert form is not None, html
    return {m[0]: m[1] for m in re.findall(r'<input[^>]*?name="([^"]+)"[^>]*?value="([^"]*)"', form.group(0))} | {
        m[1]: m[0] for m in re.findall(r'<input[^>]*?value="([^"]*)"[^>]*?name="([^"]+)"', form.group(0))
    }


def csrf(html: str) -> dict[str, str]:
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"', html)
    return {"csrf_token": found.group(1) or found.group(2)} if found else {}


def ready_artwork(services: Services, photo: bytes, locale: str = "es", *, paint: bool = True) -> tuple[str, str]:
    """An artwork with its preview ready: painted by a real worker, or only marked ready
    (``paint=False``: the pages and the webhook do not look at the picture)."""
    view = order_artwork(services, style_name="starry_night", email="ana@example.com", locale=locale, content=photo)
    if paint:
        assert Worker(services, worker_id="w").run_once() == "done"
    else:
        with transaction(services.engine) as session:
            session.execute(
                update(Artwork).where(Artwork.public_id == view.id).values(status=ArtworkStatus.PREVIEW_READY, preview_key=f"previews/{view.id}.jpg")
            )
    with transaction(services.engine, read_only=True) as session:
        return view.id, session.scalars(select(Artwork.preview_token).where(Artwork.public_id == view.id)).one()


@pytest.fixture
def shop(tmp_path: Path, models_dir: Path, style_dir: Path, database_url: str) -> Iterator[Services]:
    settings = make_settings(tmp_path / "data", models_dir, database_url=database_url, stripe_webhook_secret=SECRET, preview_max_size=96)
    add_catalog_style(settings, style_dir, passes="48x4,96x4")
    services = Services.open(settings, public_url="http://testserver")
    services.painter = microast_painter(services, steps=1)
    yield services
    services.close()


def test_the_pay_form_enforces_the_minimum_on_the_server(shop: Services, photo_bytes: bytes) -> None:
    _, token = ready_artwork(shop, photo_bytes, paint=False)
    with TestClient(create_app(services=shop, workers=0, mail=False)) as client:
        page = client.get(f"/es/a/{token}")
        fields = form_fields(page.text)
        low = client.post(f"/es/a/{token}/pay", data={**fields, "amount": "0.01"}, follow_redirects=False)
        # Refused: back to the preview page (a GET, so Back never asks to send the form again),
        # which checks what was typed again and says why, with the form to correct it.
        assert low.status_code == 303 and low.headers["location"].startswith(f"/es/a/{token}?amount=0.01")
        shown = client.get(low.headers["location"])
        assert shown.status_code == 200
        assert "El mínimo es" in shown.text and 'role="alert"' in shown.text
        assert 'name="amount"' in shown.text and 'value="0.01"' in shown.text
        ok = client.post(f"/es/a/{token}/pay", data=fields, follow_redirects=False)
        assert ok.status_code == 303 and "/es/demo-checkout/demo_" in ok.headers["location"]
        demo = client.get(ok.headers["location"].removeprefix("http://testserver"))
        assert "Pago de demostración: no se mueve dinero" in demo.text
        assert f'href="/es/a/{token}"' in demo.text  # a way back, without paying
        receipt = client.post(ok.headers["location"].removeprefix("http://testserver"), data=csrf(demo.text), follow_redirects=True)
        assert receipt.status_code == 200 and "Tu recibo" in receipt.text
        assert "Pagado, gracias" in receipt.text and "no se ha movido dinero" in receipt.text, re.sub(r"(?s).*<main", "", receipt.text)[:1500]
        assert f'src="/a/{token}/preview.jpg"' in receipt.text  # the picture bought
        # Paid: the form sends the buyer to the receipt rather than charging twice, and the
        # preview page says it is paid and leads there, with no form to pay again.
        again = client.post(f"/es/a/{token}/pay", data=fields, follow_redirects=False)
        assert again.status_code == 303 and "/es/receipts/" in again.headers["location"]
        paid = client.get(f"/es/a/{token}")
        assert "Pagado, gracias" in paid.text and 'href="/es/receipts/' in paid.text
        assert 'name="amount"' not in paid.text and "por el precio que elijas" not in paid.text


def test_the_pay_form_takes_only_the_currency_offered_to_the_buyer(shop: Services, photo_bytes: bytes) -> None:
    _, token = ready_artwork(shop, photo_bytes, paint=False)
    with TestClient(create_app(services=shop, workers=0, mail=False)) as client:
        us = {"Accept-Language": "en-US"}
        fields = form_fields(client.get(f"/en/a/{token}", headers=us).text)
        assert fields["currency"] == "USD"
        # A currency with a lower minimum in the table, typed in by hand, is not taken.
        cheap = client.post(f"/en/a/{token}/pay", data={**fields, "currency": "INR", "amount": "100"}, headers=us, follow_redirects=False)
        assert cheap.status_code == 303
        assert "currencies offered" in client.get(cheap.headers["location"], headers=us).text
        ok = client.post(f"/en/a/{token}/pay", data=fields, headers=us, follow_redirects=False)
        assert ok.status_code == 303


def test_the_stripe_checkout_carries_the_amount_currency_and_artwork(shop: Services, photo_bytes: bytes, fake_stripe: FakeStripe) -> None:
    shop.settings.stripe_secret_key = "sk_test_51abc"
    shop.settings.stripe_api_base = fake_stripe.url
    public_id, token = ready_artwork(shop, photo_bytes, paint=False)
    with TestClient(create_app(services=shop, workers=0, mail=False)) as client:
        fields = form_fields(client.get(f"/en/a/{token}", headers={"Accept-Language": "en-US"}).text)
        currency = fields["currency"]
        response = client.post(f"/en/a/{token}/pay", data={**fields, "amount": "12"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "https://checkout.stripe.test/pay/cs_test_1"
    (sent,) = fake_stripe.requests
    form = {k: v[0] for k, v in sent["form"].items()}
    assert sent["path"] == "/v1/checkout/sessions"
    assert sent["headers"]["Authorization"] == "Bearer sk_test_51abc"
    exponent = 0 if currency == "JPY" else 2
    assert form["mode"] == "payment"
    assert form["line_items[0][price_data][unit_amount]"] == str(12 * 10**exponent)
    assert form["line_items[0][price_data][currency]"] == currency.lower()
    assert form["client_reference_id"] == public_id and form["metadata[artwork_id]"] == public_id
    assert form["success_url"] == f"http://testserver/en/receipts/{public_id}"
    assert form["cancel_url"] == f"http://testserver/en/a/{token}"


def test_the_webhook_answers_4xx_to_refused_events_and_503_while_the_database_is_down(shop: Services, photo_bytes: bytes, tmp_path: Path) -> None:
    public_id, _ = ready_artwork(shop, photo_bytes, paint=False)
    body = completed_event(public_id, event_id="evt_web_1", session_id="cs_web_1", amount=900, currency="EUR")
    url = "/api/v1/payments/stripe/webhook"
    with TestClient(create_app(services=shop, workers=0, mail=False)) as client:
        assert client.post(url, content=body, headers={"Stripe-Signature": stripe_signature(body, "whsec_wrong")}).status_code == 400
        stale = stripe_signature(body, SECRET, timestamp=int(time.time()) - 3600)
        assert client.post(url, content=body, headers={"Stripe-Signature": stale}).status_code == 400
        unknown = completed_event("f" * 32, event_id="evt_web_2", session_id="cs_web_2", amount=900, currency="EUR")
        assert client.post(url, content=unknown, headers={"Stripe-Signature": stripe_signature(unknown, SECRET)}).status_code == 404
        # The database goes away: 503, so that Stripe delivers the event again later.
        working = shop.engine
        broken = create_engine(f"sqlite:///{tmp_path}") if working.dialect.name == "sqlite" else create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
        shop.engine = broken
        try:
            down = client.post(url, content=body, headers={"Stripe-Signature": stripe_signature(body, SECRET)})
        finally:
            shop.engine = working
            broken.dispose()
        assert down.status_code == 503 and down.headers["Retry-After"]
        with transaction(shop.engine, read_only=True) as session:
            assert session.scalars(select(Artwork.status).where(Artwork.public_id == public_id)).one() == ArtworkStatus.PREVIEW_READY
        back = client.post(url, content=body, headers={"Stripe-Signature": stripe_signature(body, SECRET)})
        assert back.status_code == 200 and back.json()["outcome"] == "recorded"
        twice = client.post(url, content=body, headers={"Stripe-Signature": stripe_signature(body, SECRET)})
        assert twice.status_code == 200 and twice.json()["outcome"] == "duplicate"
        ignored = json.dumps({"id": "evt_web_3", "type": "charge.refunded", "data": {"object": {}}}).encode()
        assert client.post(url, content=ignored, headers={"Stripe-Signature": stripe_signature(ignored, SECRET)}).json()["outcome"] == "ignored"


def test_the_receipt_says_when_a_delayed_payment_is_on_its_way_and_when_it_failed(shop: Services, photo_bytes: bytes) -> None:
    """Vouchers and bank transfers: after checkout the receipt does not ask for the money again
    while it is on its way; when it never arrives the page says so and leads back to paying."""
    public_id, token = ready_artwork(shop, photo_bytes, paint=False)
    url = "/api/v1/payments/stripe/webhook"

    def event(event_id: str, kind: str) -> bytes:
        body = json.loads(completed_event(public_id, event_id=event_id, session_id="cs_oxxo", amount=9900, currency="MXN"))
        body["type"] = kind
        body["data"]["object"]["payment_status"] = "unpaid"
        return json.dumps(body).encode()

    with TestClient(create_app(services=shop, workers=0, mail=False)) as client:
        completed = event("evt_oxxo_1", "checkout.session.completed")
        answer = client.post(url, content=completed, headers={"Stripe-Signature": stripe_signature(completed, SECRET)})
        assert answer.status_code == 200 and answer.json()["outcome"] == "pending"
        page = client.get(f"/es/receipts/{public_id}").text
        assert "Tu pago está en camino" in page and "Elige tu precio y paga" not in page
        assert 'http-equiv="refresh"' in page  # without scripts the page looks again
        failed = event("evt_oxxo_2", "checkout.session.async_payment_failed")
        answer = client.post(url, content=failed, headers={"Stripe-Signature": stripe_signature(failed, SECRET)})
        assert answer.status_code == 200 and answer.json()["outcome"] == "failed"
        page = client.get(f"/es/receipts/{public_id}").text
        assert "Tu pago no se ha completado y no se te ha cobrado nada" in page
        assert 'http-equiv="refresh"' not in page  # nothing changes by itself any more
        assert re.search(rf'<a class="button primary" href="/es/a/{token}">Elige tu precio y paga</a>', page), page


# ------------------------------------------------------------------------------------------------
# end to end


def assert_unmarked_double(preview: Image.Image, hd: Image.Image) -> None:
    """``hd`` is exactly twice ``preview`` and, brought back to its size, is the preview without
    its watermark: the two agree away from the mark, and under it the preview is what the HD
    picture becomes once the preview painter's mark is drawn on it."""
    from atelier.art.blocks.finish import watermark, watermark_layer

    assert hd.size == (2 * preview.width, 2 * preview.height)
    small = hd.convert("RGB").resize(preview.size, Image.Resampling.LANCZOS)
    marked = np.asarray(preview.convert("RGB"), dtype=np.float32)
    plain = np.asarray(small, dtype=np.float32)
    remarked = np.asarray(watermark(small, text=PREVIEW_MARK, opacity=0.5), dtype=np.float32)
    alpha = np.asarray(watermark_layer(preview.size, text=PREVIEW_MARK, opacity=0.5).getchannel("A"), dtype=np.float32)[..., None] / 255
    mask = alpha[..., 0] > 0
    assert 20 < mask.sum() < 0.5 * mask.size
    away = np.abs(plain - marked)[~mask].mean()
    # Alpha-weighted differences under the mark: against the HD picture as it is, and against
    # the HD picture with the mark drawn on.
    as_is = (alpha * np.abs(plain - marked)).sum() / alpha.sum() / 3
    with_mark = (alpha * np.abs(remarked - marked)).sum() / alpha.sum() / 3
    assert away < 8, away  # the same painting
    assert with_mark < 0.6 * as_is, (as_is, with_mark, away)  # the mark is in the preview only


def test_the_watermark_check_tells_a_clean_double_from_a_marked_one(photo_bytes: bytes) -> None:
    # The control of the end-to-end check below: a real photo, marked at 96 px as the preview
    # painter does, against its 192 px version clean (passes) and marked (caught).
    from atelier.art.blocks.finish import watermark
    from atelier.art.blocks.images import fit_longest

    photo = Image.open(io.BytesIO(photo_bytes)).convert("RGB")
    base = fit_longest(photo, 96)
    preview = watermark(base, text=PREVIEW_MARK, opacity=0.5)
    clean = base.resize((base.width * 2, base.height * 2), Image.Resampling.LANCZOS)
    assert_unmarked_double(preview, clean)
    with pytest.raises(AssertionError):
        assert_unmarked_double(preview, watermark(clean, text=PREVIEW_MARK, opacity=0.5))
    with pytest.raises(AssertionError):
        assert_unmarked_double(preview, clean.resize((clean.width + 2, clean.height)))


def wait_for(http: httpx.Client, status_url: str, wanted: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = http.get(status_url).json()
        if state["status"] == wanted:
            return state
        assert state["status"] != "failed" and time.monotonic() < deadline, state
        time.sleep(0.2)


@pytest.mark.slow
def test_preview_pay_hd_mail_download_end_to_end(
    database_url: str, smtp: tuple, tmp_path: Path, models_dir: Path, style_dir: Path, photo_bytes: bytes, fake_stripe: FakeStripe
) -> None:
    inbox, smtp_port = smtp
    port = free_port()
    settings = make_settings(
        tmp_path / "data",
        models_dir,
        database_url=database_url,
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        public_url=f"http://127.0.0.1:{port}",
        preview_max_size=96,  # the recipe's full size (96): the preview is not scaled down
        stripe_webhook_secret=SECRET,
        stripe_api_base=fake_stripe.url,
        download_max_count=2,
        workers=1,
    )
    add_catalog_style(settings, style_dir, passes="48x4,96x4")
    services = Services.open(settings)
    services.painter = microast_painter(services, steps=1)
    app = create_app(services=services, workers=1)
    try:
        with LiveServer(app, port) as server, httpx.Client(base_url=server.url, timeout=120) as http:
            mails = 0
            for provider in ("demo", "stripe"):
                services.settings.stripe_secret_key = "sk_test_e2e" if provider == "stripe" else None
                order = http.post(
                    "/api/v1/artworks", data={"style_name": "starry_night", "email": f"{provider}@example.com", "locale": "es"},
                    files={"content": ("dog.jpg", photo_bytes, "image/jpeg")},
                )
                assert order.status_code == 201, order.text
                public_id, status_url = order.json()["id"], order.json()["status_url"]
                wait_for(http, status_url, "preview_ready")
                mails += 1
                preview_link = link_in(inbox.wait_for(mails)[-1]).removeprefix(server.url)
                page = http.get(preview_link)
                preview = Image.open(io.BytesIO(http.get(re.search(r'<img src="(/a/[^"]+/preview\.jpg)"', page.text).group(1)).content))  # type: ignore[union-attr]
                paid = http.post(f"{preview_link}/pay", data=form_fields(page.text), follow_redirects=False)
                assert paid.status_code == 303, paid.text
                if provider == "demo":
                    demo_url = paid.headers["location"].removeprefix(server.url)
                    confirm = http.post(demo_url, data=csrf(http.get(demo_url).text), follow_redirects=False)
                    assert confirm.status_code == 303
                else:
                    # Stripe's page is where the buyer pays; then Stripe calls the webhook.
                    assert paid.headers["location"].startswith("https://checkout.stripe.test/pay/cs_test_")
                    sent = {k: v[0] for k, v in fake_stripe.requests[-1]["form"].items()}
                    body = completed_event(
                        public_id, event_id="evt_e2e", session_id=paid.headers["location"].rsplit("/", 1)[1],
                        amount=int(sent["line_items[0][price_data][unit_amount]"]), currency=sent["line_items[0][price_data][currency]"],
                    )
                    for _ in range(2):  # delivered twice: one sale, one job, one mail
                        hook = http.post("/api/v1/payments/stripe/webhook", content=body, headers={"Stripe-Signature": stripe_signature(body, SECRET)})
                        assert hook.status_code == 200
                wait_for(http, status_url, "delivered")
                mails += 1
                message = inbox.wait_for(mails)[-1]
                assert message["To"] == f"{provider}@example.com" and message["Subject"] == "Tu obra en alta resolución"
                download_link = link_in(message, r"https?://\S+/d/[A-Za-z0-9_-]+").removeprefix(server.url)
                receipt = http.get(f"/es/receipts/{public_id}")
                assert "Entregada" in receipt.text and "descargas" in receipt.text
                # The link is for the buyer's mailbox only: the receipt is reached by the artwork's id.
                assert download_link not in receipt.text and "/d/" not in receipt.text
                first = http.get(download_link)
                assert first.status_code == 200 and first.headers["content-disposition"].startswith("attachment")
                assert_unmarked_double(preview, Image.open(io.BytesIO(first.content)))
                assert http.get(download_link).status_code == 200
                gone = http.get(download_link, headers={"Accept-Language": "es"})
                assert gone.status_code == 410 and "Este enlace ha caducado" in gone.text
            time.sleep(1.0)
            assert len(inbox.messages) == mails == 4  # no second mail for the twice-delivered event
            # An expired link is refused even with uses left.
            with transaction(services.engine) as session:
                session.execute(update(Artwork).values(download_count=0, download_expires_at=utcnow()))
            assert http.get(download_link).status_code == 410
    finally:
        services.close()


def test_with_s3_storage_the_download_is_a_short_lived_presigned_link(tmp_path: Path, models_dir: Path, style_dir: Path, photo_bytes: bytes) -> None:
    import uuid

    import boto3

    from tests.store.s3_server import PolicyEnforcingMotoServer

    from atelier.service import payments

    server = PolicyEnforcingMotoServer(ip_address="127.0.0.1", port=free_port(), secret_access_key="s3-secret")
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint, bucket = f"http://{host}:{port}", f"atelier-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="s3-key", aws_secret_access_key="s3-secret").create_bucket(Bucket=bucket)
        settings = make_settings(
            tmp_path / "data", models_dir, preview_max_size=96, storage_url=f"s3://{bucket}/site", s3_endpoint_url=endpoint,
            s3_region="us-east-1", s3_access_key_id="s3-key", s3_secret_access_key="s3-secret", download_max_count=1,
        )
        add_catalog_style(settings, style_dir, passes="48x4,96x4")
        services = Services.open(settings, public_url="http://testserver")
        services.painter = microast_painter(services, steps=1)
        try:
            public_id, _ = ready_artwork(services, photo_bytes)
            started = payments.start_checkout(services, artwork=public_id, amount_minor=500, currency="USD", locale="en", base_url="http://testserver")
            payments.confirm_demo_payment(services, started.reference)
            assert Worker(services, worker_id="w-hd").run_once() == "done"
            with transaction(services.engine, read_only=True) as session:
                token, key = session.execute(select(Artwork.download_token, Artwork.hd_key).where(Artwork.public_id == public_id)).one()
            with TestClient(create_app(services=services, workers=0, mail=False)) as client:
                response = client.get(f"/d/{token}", follow_redirects=False)
                assert response.status_code == 303
                link = response.headers["location"]
                assert link.startswith(f"{endpoint}/{bucket}/site/hd/") and "X-Amz-Expires=300" in link
                fetched = httpx.get(link)
                assert fetched.status_code == 200 and fetched.content == services.blobs.read(key)
                assert "attachment" in fetched.headers["content-disposition"]
                assert client.get(f"/d/{token}", follow_redirects=False).status_code == 410
        finally:
            services.close()
    finally:
        server.stop()


def test_concurrent_downloads_never_take_more_uses_than_the_link_has(shop: Services, photo_bytes: bytes) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from atelier.service import payments

    public_id, _ = ready_artwork(shop, photo_bytes, paint=False)
    key = f"hd/{public_id}.jpg"
    shop.blobs.put(key, photo_bytes, content_type="image/jpeg")
    with transaction(shop.engine) as session:
        session.execute(
            update(Artwork).where(Artwork.public_id == public_id).values(
                status=ArtworkStatus.DELIVERED, hd_key=key, download_count=0, download_limit=3,
                download_expires_at=utcnow() + timedelta(hours=1),
            )
        )
        token = session.scalars(select(Artwork.download_token).where(Artwork.public_id == public_id)).one()

    def attempt(_: int) -> str:
        try:
            return "granted" if payments.use_download(shop, token) is not None else "missing"
        except payments.DownloadGone:
            return "gone"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(12)))
    assert outcomes.count("granted") == 3 and outcomes.count("gone") == 9
    with transaction(shop.engine, read_only=True) as session:
        assert session.scalars(select(Artwork.download_count).where(Artwork.public_id == public_id)).one() == 3
