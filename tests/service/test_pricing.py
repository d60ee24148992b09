"""Pricing: the buyer's country (trusted proxy headers only, a GeoLite2 database, the
Accept-Language region), the price table (shipped and the operator's own, validated), amounts in
minor units read with Decimal and written with Babel, the minimum enforced."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atelier.config import Settings
from atelier.service import pricing
from atelier.service.pricing import (
    AmountError,
    BelowMinimumError,
    PriceTableError,
    check_amount,
    country_from_request,
    format_amount,
    load_price_table,
    parse_amount,
    price_for,
    price_table_of,
)

from tests.service.mmdb_fixtures import write_country_mmdb


def settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(data_dir=tmp_path, **values)


@pytest.fixture
def geoip_db(tmp_path: Path) -> Iterator[Path]:
    pricing.geoip_reader.cache_clear()
    path = write_country_mmdb(tmp_path / "GeoLite2-Country.mmdb", {"81.32.0.0/12": "ES", "8.8.8.0/24": "US", "133.0.0.0/8": "JP"})
    yield path
    pricing.geoip_reader.cache_clear()


# ------------------------------------------------------------------------------------------------
# the buyer's country


def test_a_trusted_header_gives_the_country(tmp_path: Path) -> None:
    trusting = settings(tmp_path, trusted_country_headers="CF-IPCountry")
    assert country_from_request(headers={"cf-ipcountry": "es"}, client_ip=None, settings=trusting) == "ES"
    assert country_from_request(headers={"CF-IPCountry": " MX "}, client_ip=None, settings=trusting) == "MX"


def test_an_untrusted_header_is_ignored(tmp_path: Path) -> None:
    headers = {"CF-IPCountry": "CH", "CloudFront-Viewer-Country": "NO", "Accept-Language": "es-MX,es;q=0.9"}
    # By default no header is trusted: any client can send one.
    assert country_from_request(headers=headers, client_ip=None, settings=settings(tmp_path)) == "MX"
    only_cloudfront = settings(tmp_path, trusted_country_headers="CloudFront-Viewer-Country")
    assert country_from_request(headers=headers, client_ip=None, settings=only_cloudfront) == "NO"


def test_trusted_headers_are_read_in_the_order_the_settings_list_them(tmp_path: Path) -> None:
    both = settings(tmp_path, trusted_country_headers="CloudFront-Viewer-Country, CF-IPCountry")
    headers = {"CF-IPCountry": "GB", "CloudFront-Viewer-Country": "JP"}
    assert country_from_request(headers=headers, client_ip=None, settings=both) == "JP"
    assert country_from_request(headers={"CF-IPCountry": "GB"}, client_ip=None, settings=both) == "GB"


@pytest.mark.parametrize("value", ["XX", "T1", "", "ZZ", "Spain", "E", "A1", "EU"])
def test_header_values_that_are_no_country_are_ignored(tmp_path: Path, value: str) -> None:
    trusting = settings(tmp_path, trusted_country_headers="CF-IPCountry")
    headers = {"CF-IPCountry": value, "Accept-Language": "en-CA"}
    assert country_from_request(headers=headers, client_ip=None, settings=trusting) == "CA"


def test_the_geoip_database_gives_the_country_of_the_address(tmp_path: Path, geoip_db: Path) -> None:
    geo = settings(tmp_path, geoip_database=geoip_db)
    assert country_from_request(headers={}, client_ip="81.33.4.5", settings=geo) == "ES"
    assert country_from_request(headers={}, client_ip="8.8.8.8", settings=geo) == "US"
    assert country_from_request(headers={}, client_ip="133.1.2.3", settings=geo) == "JP"
    # Not in the database, not an address, IPv6 in an IPv4 database: the Accept-Language region.
    for address in ("10.0.0.1", "8.8.4.4", "not-an-ip", "2001:db8::1"):
        assert country_from_request(headers={"Accept-Language": "pt-BR"}, client_ip=address, settings=geo) == "BR"
        assert country_from_request(headers={}, client_ip=address, settings=geo) is None


def test_the_geoip_database_is_opened_once(tmp_path: Path, geoip_db: Path) -> None:
    geo = settings(tmp_path, geoip_database=geoip_db)
    for address in ("81.33.4.5", "8.8.8.8", "10.0.0.1"):
        country_from_request(headers={}, client_ip=address, settings=geo)
    info = pricing.geoip_reader.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_a_trusted_header_comes_before_the_geoip_database(tmp_path: Path, geoip_db: Path) -> None:
    both = settings(tmp_path, geoip_database=geoip_db, trusted_country_headers="CF-IPCountry")
    assert country_from_request(headers={"CF-IPCountry": "GB"}, client_ip="81.33.4.5", settings=both) == "GB"
    assert country_from_request(headers={"CF-IPCountry": "XX"}, client_ip="81.33.4.5", settings=both) == "ES"


@pytest.mark.parametrize(
    ("header", "country"),
    [
        ("es-MX,es;q=0.9,en;q=0.8", "MX"),
        ("es", None),  # a language alone says nothing about where the buyer is
        ("es-419", None),  # Latin America is not a country
        ("zh-Hant-TW", "TW"),
        ("en;q=0.9, fr-CA;q=0.8", "CA"),  # the most wanted language that names a region
        ("en-GB;q=0, es-ES;q=0.5", "ES"),  # q=0 means "not this one"
        ("en-us", "US"),
        ("", None),
    ],
)
def test_the_accept_language_region_is_the_last_resort(tmp_path: Path, header: str, country: str | None) -> None:
    assert country_from_request(headers={"Accept-Language": header}, client_ip="8.8.8.8", settings=settings(tmp_path)) == country


# ------------------------------------------------------------------------------------------------
# the price table


@pytest.mark.parametrize(
    ("country", "currency"),
    [
        ("US", "USD"), ("ES", "EUR"), ("DE", "EUR"), ("FR", "EUR"), ("IT", "EUR"), ("IE", "EUR"), ("MX", "MXN"),
        ("GB", "GBP"), ("JP", "JPY"), ("CA", "CAD"), ("AU", "AUD"), ("BR", "BRL"), ("AR", "ARS"), ("CO", "COP"),
        ("CL", "CLP"), ("CH", "CHF"), ("SE", "SEK"), ("NO", "NOK"), ("DK", "DKK"), ("PL", "PLN"), ("IN", "INR"),
        ("KE", "USD"), (None, "USD"),
    ],
)
def test_the_shipped_table_prices_each_country_in_its_currency(country: str | None, currency: str) -> None:
    price = price_for(country=country, table=load_price_table())
    assert (price.country, price.currency) == (country, currency)
    assert 0 < price.minimum_minor <= price.suggested_minor


def test_the_shipped_table_counts_minor_units_of_each_currency() -> None:
    table = load_price_table()
    for row in table.currencies.values():
        assert type(row.suggested_minor) is int and type(row.minimum_minor) is int
    assert table.currencies["JPY"].exponent == 0 and table.currencies["CLP"].exponent == 0
    assert table.currencies["EUR"].exponent == 2 and table.currencies["USD"].exponent == 2


TABLE = """
fallback_currency = "EUR"
[currencies]
EUR = { suggested = 1500, minimum = 500 }
ISK = { suggested = 150000, minimum = 50000, exponent = 2 }
[countries]
IS = "ISK"
"""


def test_the_operator_table_replaces_the_shipped_one_and_edits_take_effect(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(TABLE)
    own = settings(tmp_path, price_table=path)
    assert price_for(country="US", table=price_table_of(own)).currency == "EUR"  # its own fallback
    iceland = price_for(country="IS", table=price_table_of(own))
    assert (iceland.currency, iceland.suggested_minor, iceland.exponent) == ("ISK", 150000, 2)
    path.write_text(TABLE.replace("1500", "2500"))
    os.utime(path, ns=(time.time_ns() + 10**9,) * 2)  # a later modification time, whatever the clock's grain
    assert price_for(country="ES", table=price_table_of(own)).suggested_minor == 2500


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('fallback_currency = "USD"\n[currencies]\nUSD = { suggested = 9.5, minimum = 2 }', "currencies.USD.suggested"),
        ('fallback_currency = "USD"\n[currencies]\nUSD = { suggested = 900, minimum = "2" }', "currencies.USD.minimum"),
        ('fallback_currency = "USD"\n[currencies]\nUSD = { suggested = 100, minimum = 200 }', "currencies.USD.suggested"),
        ('fallback_currency = "USD"\n[currencies]\nUSD = { suggested = 900, minimum = 0 }', "currencies.USD.minimum"),
        ('fallback_currency = "USD"\n[currencies]\nUSD = { suggested = 900, minimum = 200, suggestd = 1 }', "currencies.USD.suggestd"),
        ('fallback_currency = "USD"\n[currencies]\nUSD = { suggested = 900, minimum = 200 }\nEUX = { suggested = 900, minimum = 200 }', "currencies.EUX"),
        ('fallback_currency = "USD"\n[currencies]\nUSD = { suggested = 900, minimum = 200 }\n[countries]\nES = "EUR"', "countries.ES"),
        ('fallback_currency = "USD"\n[currencies]\nUSD = { suggested = 900, minimum = 200 }\n[countries]\nSpain = "USD"', "countries.Spain"),
        ('fallback_currency = "GBP"\n[currencies]\nUSD = { suggested = 900, minimum = 200 }', "fallback_currency"),
        ('fallback_currency = "USD"\n', "[currencies]"),
        ('fallback_currency = "USD"\n[currencies\n', "not valid TOML"),
    ],
)
def test_a_bad_table_is_refused_naming_the_entry(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PriceTableError) as refused:
        price_table_of(settings(tmp_path, price_table=path))
    assert named in str(refused.value) and str(path) in str(refused.value)


def test_a_missing_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match="does not exist"):
        price_table_of(settings(tmp_path, price_table=tmp_path / "nope.toml"))


# ------------------------------------------------------------------------------------------------
# amounts


@pytest.mark.parametrize(
    ("text", "currency", "locale", "minor"),
    [
        ("5", "USD", "en", 500),
        ("5.50", "USD", "en", 550),
        ("5,50", "EUR", "es", 550),
        ("5.50", "EUR", "es", 550),  # two digits after the point can only be cents
        ("1.234,50", "EUR", "es", 123450),
        ("1,234.50", "USD", "en", 123450),
        ("1.234", "EUR", "es", 123400),  # a Spanish thousands point
        ("1 234,50 €", "EUR", "es", 123450),
        ("$5", "USD", "en", 500),
        ("US$ 12.00", "USD", "es", 1200),
        ("5 EUR", "EUR", "es", 500),
        ("1200", "JPY", "en", 1200),
        ("¥1,200", "JPY", "en", 1200),
        ("1.200", "JPY", "es", 1200),
        ("1.15", "USD", "en", 115),  # float(1.15) * 100 is 114.999...
        ("4.35", "USD", "en", 435),
        ("+7", "GBP", "en", 700),
        (".5", "USD", "en", 50),
        ("0", "USD", "en", 0),  # not negative: the minimum refuses it, not the parser
    ],
)
def test_a_typed_amount_becomes_minor_units(text: str, currency: str, locale: str, minor: int) -> None:
    parsed = parse_amount(text, currency=currency, locale=locale)
    assert parsed == minor and type(parsed) is int


@pytest.mark.parametrize(
    ("text", "currency", "locale", "code"),
    [
        ("", "USD", "en", "empty"),
        ("  ", "USD", "en", "empty"),
        ("-5", "USD", "en", "negative"),
        ("−5", "EUR", "es", "negative"),
        ("NaN", "USD", "en", "not_a_number"),
        ("Infinity", "USD", "en", "not_a_number"),
        ("1e5", "USD", "en", "not_a_number"),
        ("five", "USD", "en", "not_a_number"),
        ("5..0", "USD", "en", "not_a_number"),
        ("1,2,3", "USD", "en", "not_a_number"),
        ("5.505", "USD", "en", "too_many_decimals"),
        ("1.234", "USD", "en", "too_many_decimals"),  # an English point is a decimal point
        ("5.5", "JPY", "en", "too_many_decimals"),
        ("1000000", "USD", "en", "too_large"),
        ("9" * 60, "USD", "en", "too_large"),
        ("1" * 70, "USD", "en", "not_a_number"),
    ],
)
def test_an_amount_that_is_not_one_is_refused_with_a_message(text: str, currency: str, locale: str, code: str) -> None:
    with pytest.raises(AmountError) as refused:
        parse_amount(text, currency=currency, locale=locale)
    assert refused.value.code == code
    english, spanish = refused.value.message_for("en"), refused.value.message_for("es")
    assert english and spanish and english != spanish


@pytest.mark.parametrize(
    ("minor", "currency", "locale", "text"),
    [
        (500, "USD", "en", "$5.00"),
        (500, "EUR", "es", "5,00\xa0€"),
        (500, "JPY", "en", "¥500"),
        (123450, "EUR", "es_ES", "1.234,50\xa0€"),
        (15000, "MXN", "es_MX", "$150.00"),
        (15000, "MXN", "en", "MX$150.00"),
        (700, "GBP", "en_GB", "£7.00"),
    ],
)
def test_amounts_are_written_for_the_buyer(minor: int, currency: str, locale: str, text: str) -> None:
    assert format_amount(minor, currency=currency, locale=locale) == text


@pytest.mark.parametrize("locale", ["en", "es", "es_MX", "en_GB"])
@pytest.mark.parametrize(("currency", "minor"), [("USD", 999), ("EUR", 123456), ("JPY", 1200), ("MXN", 15050), ("CLP", 5000)])
def test_a_written_amount_reads_back_the_same(locale: str, currency: str, minor: int) -> None:
    assert parse_amount(format_amount(minor, currency=currency, locale=locale), currency=currency, locale=locale) == minor
    exponent = pricing.exponent_of(currency)
    assert parse_amount(pricing.input_amount(minor, exponent=exponent, locale=locale), currency=currency, locale=locale) == minor


@pytest.mark.parametrize(
    ("minor", "exponent", "locale", "text"),
    [(800, 2, "es", "8,00"), (800, 2, "en", "8.00"), (1200, 0, "en", "1200"), (15000, 2, "es_MX", "150.00"), (600000, 2, "es", "6000,00")],
)
def test_the_amount_field_starts_with_the_number_alone_written_for_the_buyer(minor: int, exponent: int, locale: str, text: str) -> None:
    assert pricing.input_amount(minor, exponent=exponent, locale=locale) == text


def test_the_minimum_is_enforced_and_named_in_the_buyers_language() -> None:
    price = price_for(country="ES", table=load_price_table())
    check_amount(price.minimum_minor, price)
    check_amount(price.suggested_minor * 3, price)
    with pytest.raises(BelowMinimumError) as refused:
        check_amount(price.minimum_minor - 1, price)
    minimum = price.minimum_minor // 100
    assert refused.value.message_for("es") == f"El mínimo es {minimum},00\xa0€."
    assert refused.value.message_for("en") == f"The minimum is €{minimum}.00."
    with pytest.raises(AmountError) as too_large:
        check_amount(pricing.MAX_AMOUNT_MINOR + 1, price)
    assert too_large.value.code == "too_large"
