"""What a buyer is asked to pay: their country, its currency, a suggested and a minimum price.

The country comes, in order, from a request header that the operator's proxy sets and that the
settings say to trust (``ATELIER_TRUSTED_COUNTRY_HEADERS``), from a MaxMind GeoLite2 Country
database when one is configured (``ATELIER_GEOIP_DATABASE``), or from the region of the browser's
Accept-Language. A header the settings do not name is ignored: any client can send
``CF-IPCountry: CH`` to be offered Swiss prices.

Prices come from a TOML table (the shipped ``prices.toml`` or ``ATELIER_PRICE_TABLE``): country ->
currency, currency -> suggested and minimum price. Every amount is an ``int`` of the currency's
minor unit (cents; yen for JPY, which has none); the buyer's typed text goes through
:class:`~decimal.Decimal` only, never through a float.
"""

from __future__ import annotations

import logging
import re
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.numbers import (
    format_currency,
    format_decimal,
    get_currency_precision,
    get_currency_symbol,
    get_decimal_symbol,
    get_group_symbol,
    list_currencies,
)

from atelier.service.errors import ServiceError
from atelier.config import Settings
from atelier.extras import need
from atelier.service import i18n

log = logging.getLogger(__name__)

#: The price table shipped with Atelier.
DEFAULT_PRICE_TABLE = Path(__file__).resolve().with_name("prices.toml")

#: The largest amount taken, in minor units: Stripe's own ceiling for one payment (8 digits).
MAX_AMOUNT_MINOR = 99_999_999

#: Header values that are not a country: unknown (CloudFront and Cloudflare say XX, CLDR says
#: ZZ), Tor (T1), anonymous proxies and satellites (A1, A2), regions rather than countries.
_NOT_COUNTRIES = frozenset({"XX", "ZZ", "T1", "A1", "A2", "O1", "EU", "AP", "UN"})
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class PricingError(ServiceError):
    """An amount that cannot be taken. ``user_message`` is an English message (a catalog msgid)
    for the buyer, with ``{placeholders}`` filled from ``params``; :meth:`message_for` gives it in
    the page's language."""

    def __init__(self, message: str, *, code: str, user_message: str, params: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.user_message = user_message
        self.params = dict(params or {})

    def message_for(self, locale: str) -> str:
        """The message for the buyer, translated to ``locale`` (``en``, ``es``, ``es_MX``)."""
        return i18n.gettext(i18n.normalize(locale), self.user_message).format(**self.params)


class AmountError(PricingError):
    """The buyer's typed amount is not an amount (empty, negative, not a number, too precise,
    too large)."""


class BelowMinimumError(PricingError):
    """The amount is below the minimum price of its currency (``price``)."""

    def __init__(self, message: str, *, code: str, user_message: str, price: Price) -> None:
        super().__init__(message, code=code, user_message=user_message)
        self.price = price

    def message_for(self, locale: str) -> str:
        minimum = format_amount(self.price.minimum_minor, currency=self.price.currency, locale=locale, exponent=self.price.exponent)
        return i18n.gettext(i18n.normalize(locale), self.user_message).format(minimum=minimum)


class PriceTableError(ValueError):
    """The price table is not valid; the message names the file and the bad entry. An operator's
    mistake, not a buyer's: it is not a ServiceError, so a page answers 500 and the log says why."""


@dataclass(frozen=True)
class CurrencyPrice:
    """One currency's row of the table."""

    currency: str
    suggested_minor: int
    minimum_minor: int
    exponent: int


@dataclass(frozen=True)
class PriceTable:
    """Country -> currency -> prices, validated (see :func:`load_price_table`)."""

    currencies: Mapping[str, CurrencyPrice]
    countries: Mapping[str, str]
    fallback_currency: str
    source: str = "<table>"


@dataclass(frozen=True)
class Price:
    """What one buyer is offered. ``country`` is theirs as found (None when unknown), not
    necessarily one listed in the table."""

    country: str | None
    currency: str
    suggested_minor: int
    minimum_minor: int
    exponent: int


# ------------------------------------------------------------------------------------------------
# the buyer's country


def country_from_request(*, headers: Mapping[str, str], client_ip: str | None, settings: Settings) -> str | None:
    """The buyer's ISO 3166 alpha-2 country (``"ES"``), or None when nothing says it.

    Trusted headers first (in the order the settings list them), then the GeoIP database, then
    the Accept-Language region. ``headers`` may be Starlette's (case-insensitive) or a plain dict.
    """
    lowered = {str(name).lower(): value for name, value in headers.items()}
    for name in settings.trusted_country_headers:
        country = _country_code(lowered.get(name.lower()))
        if country:
            return country
    if settings.geoip_database is not None and client_ip:
        country = country_from_ip(client_ip, database=settings.geoip_database)
        if country:
            return country
    return country_from_accept_language(lowered.get("accept-language"))


def _country_code(value: str | None) -> str | None:
    if not value:
        return None
    code = value.strip().upper()
    if not _COUNTRY.match(code) or code in _NOT_COUNTRIES:
        return None
    return code


@lru_cache(maxsize=4)
def geoip_reader(database: Path) -> Any:
    """The GeoIP2 reader of ``database``, opened once per process (it memory-maps the file and is
    safe to share between threads)."""
    database_module = need("geoip2.database")

    log.info("reading countries from the GeoIP database %s", database)
    return database_module.Reader(str(database))


def country_from_ip(client_ip: str, *, database: Path) -> str | None:
    """The country of ``client_ip`` in a GeoLite2/GeoIP2 Country database, or None (a private
    or unknown address, an address the database does not cover)."""
    errors = need("geoip2.errors")

    reader = geoip_reader(Path(database))
    try:
        found = reader.country(client_ip)
    except (errors.AddressNotFoundError, ValueError):
        # ValueError: not an address, or an IPv6 address in an IPv4-only database.
        return None
    return _country_code(found.country.iso_code or found.registered_country.iso_code)


def country_from_accept_language(header: str | None) -> str | None:
    """The region of the most wanted language that names one (``es-MX`` -> MX). A bare language
    (``es``) says nothing about the country; nor does a UN M.49 area (``es-419``)."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:50]):
        pieces = [p.strip() for p in part.split(";")]
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0 and quality == quality:  # not NaN
            ranked.append((-quality, position, pieces[0]))
    for _, _, tag in sorted(ranked):
        # language[-script]-REGION[-...]: the region is the first 2-letter subtag after the language.
        for subtag in tag.replace("_", "-").split("-")[1:]:
            if len(subtag) == 2 and subtag.isalpha():
                country = _country_code(subtag)
                if country:
                    return country
                break
    return None


# ------------------------------------------------------------------------------------------------
# the price table


def load_price_table(path: Path | None = None) -> PriceTable:
    """Read and validate a price table (default: the shipped one). Raises
    :class:`PriceTableError` naming the file and the entry at fault."""
    path = Path(path) if path is not None else DEFAULT_PRICE_TABLE
    try:
        with open(path, "rb") as source:
            data = tomllib.load(source)
    except FileNotFoundError:
        raise PriceTableError(f"price table {path} does not exist (ATELIER_PRICE_TABLE)") from None
    except tomllib.TOMLDecodeError as exc:
        raise PriceTableError(f"price table {path} is not valid TOML: {exc}") from None
    return parse_price_table(data, source=str(path))


def parse_price_table(data: Mapping[str, Any], *, source: str = "<table>") -> PriceTable:
    """Validate a price table already read from TOML (see ``prices.toml`` for the layout)."""

    def bad(entry: str, problem: str) -> PriceTableError:
        return PriceTableError(f"price table {source}: {entry} {problem}")

    unknown = set(data) - {"fallback_currency", "currencies", "countries"}
    if unknown:
        raise bad(sorted(unknown)[0], "is not a known key (fallback_currency, currencies, countries)")
    known = list_currencies()
    currencies: dict[str, CurrencyPrice] = {}
    rows = data.get("currencies")
    if not isinstance(rows, Mapping) or not rows:
        raise bad("[currencies]", "is missing or empty")
    for code, row in rows.items():
        entry = f"currencies.{code}"
        if not _CURRENCY.match(code) or code not in known:
            raise bad(entry, "is not an ISO 4217 currency code (three capitals, e.g. EUR)")
        if not isinstance(row, Mapping):
            raise bad(entry, "must be a table with suggested and minimum")
        extra = set(row) - {"suggested", "minimum", "exponent"}
        if extra:
            raise bad(f"{entry}.{sorted(extra)[0]}", "is not a known key (suggested, minimum, exponent)")
        exponent = row.get("exponent", get_currency_precision(code))
        if not _is_int(exponent) or not 0 <= exponent <= 4:
            raise bad(f"{entry}.exponent", f"must be a whole number from 0 to 4, got {exponent!r}")
        values = {}
        for key in ("suggested", "minimum"):
            value = row.get(key)
            if not _is_int(value):
                raise bad(f"{entry}.{key}", f"must be a whole number of minor units (900 for 9.00), got {value!r}")
            if not 0 < value <= MAX_AMOUNT_MINOR:
                raise bad(f"{entry}.{key}", f"must be between 1 and {MAX_AMOUNT_MINOR}, got {value}")
            values[key] = value
        if values["suggested"] < values["minimum"]:
            raise bad(f"{entry}.suggested", f"({values['suggested']}) is below the minimum ({values['minimum']})")
        currencies[code] = CurrencyPrice(code, values["suggested"], values["minimum"], exponent)
    countries: dict[str, str] = {}
    mapping = data.get("countries", {})
    if not isinstance(mapping, Mapping):
        raise bad("[countries]", "must be a table of COUNTRY = \"CURRENCY\"")
    for country, currency in mapping.items():
        entry = f"countries.{country}"
        if not _COUNTRY.match(country) or country in _NOT_COUNTRIES:
            raise bad(entry, "is not an ISO 3166 country code (two capitals, e.g. ES)")
        if not isinstance(currency, str) or currency not in currencies:
            raise bad(entry, f"names {currency!r}, which has no row in [currencies]")
        countries[country] = currency
    fallback = data.get("fallback_currency")
    if not isinstance(fallback, str) or fallback not in currencies:
        raise bad("fallback_currency", f"must name a currency of [currencies], got {fallback!r}")
    return PriceTable(currencies=currencies, countries=countries, fallback_currency=fallback, source=source)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_table_lock = threading.Lock()
_tables: dict[Path, tuple[int, PriceTable]] = {}


def price_table_of(settings: Settings) -> PriceTable:
    """The table the settings name, read again when the file changes (an operator's edit takes
    effect without a restart; a broken edit raises PriceTableError until it is fixed)."""
    path = Path(settings.price_table) if settings.price_table is not None else DEFAULT_PRICE_TABLE
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise PriceTableError(f"price table {path} does not exist (ATELIER_PRICE_TABLE)") from None
    with _table_lock:
        cached = _tables.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    table = load_price_table(path)
    with _table_lock:
        _tables[path] = (stamp, table)
    return table


def price_for(*, country: str | None, table: PriceTable) -> Price:
    """The price offered to a buyer from ``country`` (None or unlisted: the fallback currency)."""
    country = _country_code(country)
    currency = table.countries.get(country or "", table.fallback_currency)
    row = table.currencies[currency]
    return Price(
        country=country,
        currency=row.currency,
        suggested_minor=row.suggested_minor,
        minimum_minor=row.minimum_minor,
        exponent=row.exponent,
    )


def check_amount(minor: int, price: Price) -> None:
    """Refuse an amount below ``price``'s minimum (or above what one payment can carry) with a
    :class:`PricingError` whose message says the minimum. The pay route calls this on every
    payment: the form is the buyer's to change."""
    if not _is_int(minor):
        raise AmountError(f"amount {minor!r} is not minor units", code="not_a_number", user_message=_NOT_A_NUMBER)
    if minor < price.minimum_minor:
        raise BelowMinimumError(
            f"{minor} minor units of {price.currency} is below the minimum {price.minimum_minor}",
            code="below_minimum",
            user_message=i18n.lazy("The minimum is {minimum}."),
            price=price,
        )
    if minor > MAX_AMOUNT_MINOR:
        raise AmountError(f"{minor} is above {MAX_AMOUNT_MINOR}", code="too_large", user_message=_TOO_LARGE)


# ------------------------------------------------------------------------------------------------
# amounts as text


_NOT_A_NUMBER = i18n.lazy("Please type an amount, for example 5 or 5.50.")
_TOO_LARGE = i18n.lazy("That amount is too large.")


def exponent_of(currency: str) -> int:
    """Decimals of ``currency`` (2 for EUR, 0 for JPY), from CLDR."""
    return int(get_currency_precision(currency))


@cache
def babel_locale(locale: str) -> Locale:
    """A Babel locale for ``locale`` (``es``, ``es_MX``, ``es-MX``); English when unknown."""
    try:
        return Locale.parse(locale.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse(i18n.DEFAULT_LOCALE)


def display_locale(language: str, country: str | None) -> str:
    """The locale amounts are written in for a page in ``language`` seen from ``country``:
    ``es_MX`` writes pesos as ``$150.00``, plain ``es`` as ``150,00 MXN``. A pair CLDR does not
    know (``en_JP``) falls back to the language alone."""
    if country:
        candidate = f"{language}_{country}"
        try:
            Locale.parse(candidate)
            return candidate
        except (UnknownLocaleError, ValueError):
            pass
    return language


def _decimal(minor: int, exponent: int) -> Decimal:
    return Decimal(minor).scaleb(-exponent)


def format_amount(minor: int, *, currency: str, locale: str, exponent: int | None = None) -> str:
    """``minor`` units of ``currency`` as the buyer reads it: ``$5.00``, ``5,00 €``, ``¥500``.
    ``exponent`` is the table's when it overrides CLDR's decimals for this currency."""
    standard = exponent_of(currency)
    digits = standard if exponent is None else exponent
    value = _decimal(minor, digits)
    if digits == standard:
        return str(format_currency(value, currency, locale=babel_locale(locale)))
    # The table counts this currency with other decimals than CLDR: show the value as counted.
    return str(format_currency(value, currency, locale=babel_locale(locale), currency_digits=False, decimal_quantization=False))


def input_amount(minor: int, *, exponent: int, locale: str) -> str:
    """``minor`` as the amount field's starting text: the number without symbol or grouping,
    with the locale's decimal sign (``8,00`` in Spanish, ``8.00`` in English, ``1200`` yen), so
    that it reads back through :func:`parse_amount` unchanged."""
    pattern = "0" + ("." + "0" * exponent if exponent else "")
    return str(format_decimal(_decimal(minor, exponent), format=pattern, locale=babel_locale(locale), decimal_quantization=True))


def parse_amount(text: str, *, currency: str, locale: str, exponent: int | None = None) -> int:
    """The buyer's typed amount in minor units of ``currency``: ``"5"``, ``"5.50"``, ``"5,50"``,
    ``"1.234,50"`` (es), ``"1,234.50"`` (en), a currency symbol or code around it.

    A lone separator is the decimal one unless it is the locale's grouping separator followed by
    exactly three digits (``1.234`` is 1234 in Spanish, 1.234 in English). Raises
    :class:`AmountError` for an empty, negative, non-numeric, too precise (``5.505`` dollars,
    ``5.5`` yen) or absurdly large amount. Pass ``exponent=price.exponent`` when the price
    table overrides CLDR's decimals for the currency.
    """
    digits = exponent_of(currency) if exponent is None else exponent
    if not isinstance(text, str) or len(text) > 64:
        raise AmountError("amount text too long", code="not_a_number", user_message=_NOT_A_NUMBER)
    # Spaces (NBSP, narrow NBSP) and Swiss apostrophes group digits; a symbol or code may surround
    # the amount as the buyer copied it from the page.
    cleaned = re.sub(r"[\s\u00a0\u202f'’]", "", text)
    for symbol in sorted({currency, get_currency_symbol(currency, locale=babel_locale(locale)), *"$€£¥￥₹"}, key=len, reverse=True):
        cleaned = re.sub(re.escape(symbol), "", cleaned, flags=re.IGNORECASE)
    if not cleaned:
        raise AmountError("empty amount", code="empty", user_message=_NOT_A_NUMBER)
    if cleaned[0] in "-−":
        raise AmountError(f"negative amount {text!r}", code="negative", user_message=i18n.lazy("The amount cannot be negative."))
    cleaned = cleaned.lstrip("+")
    if not re.fullmatch(r"[\d.,]+", cleaned) or not any(c.isdigit() for c in cleaned):
        raise AmountError(f"not an amount: {text!r}", code="not_a_number", user_message=_NOT_A_NUMBER)
    number = _normalize(cleaned, babel_locale(locale))
    if number is None:
        raise AmountError(f"not an amount: {text!r}", code="not_a_number", user_message=_NOT_A_NUMBER)
    try:
        value = Decimal(number)
    except InvalidOperation:
        raise AmountError(f"not an amount: {text!r}", code="not_a_number", user_message=_NOT_A_NUMBER) from None
    if not value.is_finite():
        raise AmountError(f"not an amount: {text!r}", code="not_a_number", user_message=_NOT_A_NUMBER)
    minor = value.scaleb(digits)
    if minor != minor.to_integral_value():
        if digits == 0:
            raise AmountError(
                f"{text!r} has decimals", code="too_many_decimals",
                user_message=i18n.lazy("This currency has no cents: please type a whole amount."),
            )
        raise AmountError(
            f"{text!r} has more than {digits} decimals", code="too_many_decimals",
            user_message=i18n.lazy("Please type at most {decimals} decimals."), params={"decimals": str(digits)},
        )
    if minor > MAX_AMOUNT_MINOR:
        raise AmountError(f"{text!r} is too large", code="too_large", user_message=_TOO_LARGE)
    return int(minor)


def _normalize(text: str, locale: Locale) -> str | None:
    """``text`` (digits and separators) as ``1234.50``, or None when its separators make no sense."""
    decimal_symbol = get_decimal_symbol(locale)
    group_symbol = get_group_symbol(locale)
    separators = [c for c in text if c in ".,"]
    if not separators:
        return text
    if len(set(separators)) == 2:
        # Both: the last one is the decimal separator, the other groups.
        decimal_char = text[max(text.rfind("."), text.rfind(","))]
        group_char = "," if decimal_char == "." else "."
        if text.count(decimal_char) != 1:
            return None
        whole, fraction = text.split(decimal_char)
        return _ungroup(whole, group_char) and f"{_ungroup(whole, group_char)}.{fraction}"
    char = separators[0]
    if len(separators) > 1:
        # The same separator more than once can only group: 1.234.567
        return _ungroup(text, char)
    whole, fraction = text.split(char)
    if char == group_symbol and char != decimal_symbol and len(fraction) == 3 and whole:
        return _ungroup(text, char)
    return f"{whole or '0'}.{fraction or '0'}"


def _ungroup(text: str, group_char: str) -> str | None:
    """``1.234.567`` -> ``1234567`` when the groups are well formed (1-3 digits, then threes)."""
    groups = text.split(group_char)
    if not groups[0] or len(groups[0]) > 3 or any(len(g) != 3 for g in groups[1:]):
        return None
    return "".join(groups)
