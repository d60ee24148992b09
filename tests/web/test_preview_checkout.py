"""The checkout form on the preview page: the suggested price in the buyer's currency, from a
country header only when the settings trust it; in a real browser for buyers in the US, Spain
(the Spanish page), Mexico, the UK and Japan."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from atelier.config import Settings
from atelier.service.artworks import order_artwork
from atelier.service.context import Services
from atelier.service import pricing
from atelier.service.pricing import load_price_table, parse_amount
from atelier.service.worker import Worker
from atelier.store.db import Artwork, transaction
from atelier.web.app import create_app

from tests.service.mmdb_fixtures import write_country_mmdb
from tests.service.service_fixtures import free_port, install_test_style, make_settings, microast_painter, small_jpeg
from tests.web.web_fixtures import LiveServer

TRUST_CF = {"trusted_country_headers": ("CF-IPCountry",)}
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


def painted_preview(services: Services, style_dir: Path, photo: bytes) -> str:
    """A commission painted to its watermarked preview (the quick MicroAST painter); its token."""
    install_test_style(services, style_dir)
    services.painter = microast_painter(services, steps=1)
    order_artwork(services, style_name="starry-night", email="buyer@example.com", locale="en", content=photo)
    Worker(services, worker_id="w").run_once()
    with transaction(services.engine, read_only=True) as session:
        return session.scalars(select(Artwork.preview_token).where(Artwork.status == "preview_ready")).one()


def checkout(html: str) -> dict[str, str] | None:
    """The checkout form's action, fields and texts, or None when the page has none."""
    form = re.search(r'<form class="checkout"[^>]*action="([^"]+)"(.*?)</form>', html, re.S)
    if form is None:
        return None
    body = form.group(2)
    amount = re.search(r"<input[^>]*\bname=\"amount\"[^>]*>", body)
    currency = re.search(r'<input type="hidden" name="currency" value="([^"]+)"', body)
    assert amount and currency
    attribute = lambda name: re.search(rf'\b{name}="([^"]*)"', amount.group(0)).group(1)  # noqa: E731
    return {
        "action": form.group(1),
        "currency": currency.group(1),
        "value": attribute("value"),
        "minimum_minor": attribute("data-minimum-minor"),
        "text": re.sub(r"<[^>]+>", "", body),
    }


@pytest.fixture
def settings(tmp_path: Path, models_dir: Path) -> Settings:
    return make_settings(tmp_path, models_dir, **TRUST_CF)


@pytest.fixture
def token(services: Services, style_dir: Path, photo_bytes: bytes) -> str:
    return painted_preview(services, style_dir, photo_bytes)


def test_the_preview_page_offers_the_suggested_price_with_a_form_to_pay(client: TestClient, token: str) -> None:
    table = load_price_table()
    euro = table.currencies["EUR"]
    form = checkout(client.get(f"/es/a/{token}", headers={"CF-IPCountry": "ES"}).text)
    assert form is not None
    assert form["action"] == f"/es/a/{token}/pay"
    assert form["currency"] == "EUR"
    # The amount to pay starts at the suggestion, written the Spanish way, as is the price in words.
    euros = f"{euro.suggested_minor // 100},{euro.suggested_minor % 100:02d}"
    assert (form["value"], form["minimum_minor"]) == (euros, str(euro.minimum_minor))
    assert f"Precio sugerido: {euros}\xa0€" in form["text"]
    assert "Pagar" in form["text"] and "Mínimo" in form["text"]
    yen = table.currencies["JPY"]
    form = checkout(client.get(f"/en/a/{token}", headers={"CF-IPCountry": "JP"}).text)
    assert form is not None and form["currency"] == "JPY"
    assert (form["value"], form["minimum_minor"]) == (str(yen.suggested_minor), str(yen.minimum_minor))
    assert f"Suggested price: ¥{yen.suggested_minor:,}" in form["text"] and "Pay" in form["text"]


def test_an_untrusted_country_header_is_ignored(client: TestClient, token: str) -> None:
    # Only CF-IPCountry is trusted here: CloudFront's header, which any client can send, is not.
    page = client.get(f"/en/a/{token}", headers={"CloudFront-Viewer-Country": "JP", "Accept-Language": "en-GB,en;q=0.8"})
    form = checkout(page.text)
    assert form is not None and form["currency"] == "GBP"  # from the Accept-Language region
    form = checkout(client.get(f"/en/a/{token}", headers={"CloudFront-Viewer-Country": "JP"}).text)
    assert form is not None and form["currency"] == "USD"  # nothing known: the fallback
    form = checkout(client.get(f"/en/a/{token}", headers={"CF-IPCountry": "JP"}).text)
    assert form is not None and form["currency"] == "JPY"


def test_behind_a_trusted_proxy_the_geoip_database_reads_the_forwarded_address(
    services: Services, token: str, tmp_path: Path
) -> None:
    pricing.geoip_reader.cache_clear()
    services.settings.geoip_database = write_country_mmdb(tmp_path / "countries.mmdb", {"81.32.0.0/12": "ES", "133.0.0.0/8": "JP"})
    services.settings.trusted_proxies = ("10.0.0.0/8",)
    with TestClient(create_app(services=services, workers=0, mail=False), client=("10.1.2.3", 40000)) as proxied:
        form = checkout(proxied.get(f"/en/a/{token}", headers={"X-Forwarded-For": "81.33.4.5"}).text)
        assert form is not None and form["currency"] == "EUR"
        form = checkout(proxied.get(f"/en/a/{token}", headers={"X-Forwarded-For": "133.1.2.3, 10.9.9.9"}).text)
        assert form is not None and form["currency"] == "JPY"
    # Straight from an untrusted peer, its X-Forwarded-For is not believed: its own address counts.
    with TestClient(create_app(services=services, workers=0, mail=False), client=("133.5.5.5", 40000)) as direct:
        form = checkout(direct.get(f"/en/a/{token}", headers={"X-Forwarded-For": "81.33.4.5"}).text)
        assert form is not None and form["currency"] == "JPY"
    pricing.geoip_reader.cache_clear()


def test_no_form_once_the_artwork_is_no_longer_for_sale(client: TestClient, services: Services, token: str) -> None:
    with transaction(services.engine) as session:
        session.execute(update(Artwork).where(Artwork.preview_token == token).values(status="paid"))
    page = client.get(f"/en/a/{token}", headers={"CF-IPCountry": "US"})
    assert page.status_code == 200 and "preview.jpg" in page.text
    assert checkout(page.text) is None


def test_a_broken_price_table_hides_the_form_but_not_the_preview(
    client: TestClient, services: Services, token: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "prices.toml"
    broken.write_text('fallback_currency = "USD"\n[currencies]\nUSD = { suggested = 9.99, minimum = 2 }\n')
    services.settings.price_table = broken
    page = client.get(f"/en/a/{token}", headers={"CF-IPCountry": "US"})
    assert page.status_code == 200 and "preview.jpg" in page.text
    assert checkout(page.text) is None
    assert "currencies.USD.suggested" in caplog.text


# ------------------------------------------------------------------------------------------------
# in a real browser

BUYERS = [
    # country, page language, browser locale, currency, the suggested price as the page writes
    # it, the locale the amount field is written in
    ("US", "en", "en-US", "USD", r"^\$\d+\.\d\d$", "en"),
    ("ES", "es", "es-ES", "EUR", r"^\d+,\d\d\s€$", "es"),
    ("MX", "en", "es-MX", "MXN", r"^MX\$\d+\.\d\d$", "en"),
    ("GB", "en", "en-GB", "GBP", r"^£\d+\.\d\d$", "en"),
    ("JP", "en", "ja-JP", "JPY", r"^¥[\d,]+$", "en"),
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, style_dir: Path, content_dir: Path) -> Iterator[tuple[str, str]]:
    """A live server trusting CF-IPCountry (as behind Cloudflare), with one painted preview."""
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("shop"), models_dir, public_url=f"http://127.0.0.1:{port}", **TRUST_CF)
    services = Services.open(settings)
    try:
        token = painted_preview(services, style_dir, small_jpeg(content_dir / "dog.jpg", 160))
        with LiveServer(create_app(services=services, workers=0, mail=False), port) as server:
            yield server.url, token
    finally:
        services.close()


@pytest.mark.browser
def test_buyers_see_the_price_in_their_own_currency(shop: tuple[str, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium (scripts/test-services does it)")
    base, token = shop
    table = load_price_table()
    expect.set_options(timeout=30_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            for country, lang, locale, currency, written, field_locale in BUYERS:
                # The proxy's country header on every request of this buyer.
                context = browser.new_context(locale=locale, extra_http_headers={"CF-IPCountry": country}, viewport={"width": 390, "height": 844})
                page = context.new_page()
                problems: list[str] = []
                page.on("pageerror", lambda error: problems.append(str(error)))  # noqa: B023
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)  # noqa: B023
                page.goto(f"{base}/{lang}/a/{token}")
                form = page.locator("form.checkout")
                expect(form).to_be_visible()
                expect(form).to_have_attribute("action", f"/{lang}/a/{token}/pay")
                expect(form.locator("input[name=currency]")).to_have_value(currency)
                expect(form.locator(".currency-code")).to_have_text(currency)
                suggested = form.locator(".suggested-price strong")
                expect(suggested).to_have_text(re.compile(written))
                row = table.currencies[currency]
                amount = form.locator("input[name=amount]")
                typed = amount.input_value()
                assert parse_amount(typed, currency=currency, locale=field_locale) == row.suggested_minor
                if country == "ES":
                    assert "," in typed and "." not in typed
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"checkout-{country.lower()}-{lang}.png"), full_page=True)
                # The browser itself refuses what is not an amount (the server reads it again).
                assert amount.evaluate("e => e.checkValidity()")
                amount.fill("lots")
                assert not amount.evaluate("e => e.checkValidity()")
                if lang == "es":
                    expect(page.locator("html")).to_have_attribute("lang", "es")
                    expect(form.locator(".suggested-price")).to_contain_text("Precio sugerido")
                    expect(form.locator("button[type=submit]")).to_have_text("Pagar")
                    expect(form).to_contain_text("Tu precio, en EUR")
                else:
                    expect(form.locator("button[type=submit]")).to_have_text("Pay")
                context.close()
                assert not problems, (country, problems)
        finally:
            browser.close()
