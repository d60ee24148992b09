"""English and Spanish: which one a request wants, and the translated strings (Babel catalogs).

Messages are written in English in the code and the templates (``_("...")``); the Spanish
catalog is ``web/locales/es/LC_MESSAGES/messages.po``. It is read and compiled in memory at first
use, so there is no compiled ``.mo`` file to forget to rebuild. The catalogs sit with the web
app's other package data (templates, static files) because that is what the package ships; the
mails rendered here use the same catalog, so a word is translated once for pages and mails.

Extract new messages with ``pybabel extract -F babel.cfg`` or read the test
``tests/web/test_i18n.py``, which fails when a message in a template or a mail has no Spanish.
"""

from __future__ import annotations

import gettext as _gettext
import io
import logging
import threading
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

log = logging.getLogger(__name__)

#: The languages Atelier speaks, the first being the default.
LOCALES: tuple[str, ...] = ("en", "es")
DEFAULT_LOCALE = "en"
#: Language names, each in its own language (for the language switch).
LANGUAGE_NAMES = {"en": "English", "es": "Español"}

LOCALES_DIR = Path(__file__).resolve().parents[1] / "web" / "locales"
DOMAIN = "messages"

_lock = threading.Lock()


def normalize(value: str | None) -> str:
    """A supported locale for ``value`` (``es-MX`` -> ``es``), else the default."""
    if not value:
        return DEFAULT_LOCALE
    primary = value.strip().replace("_", "-").split("-")[0].lower()
    return primary if primary in LOCALES else DEFAULT_LOCALE


def negotiate(accept_language: str | None) -> str:
    """The best supported locale for an ``Accept-Language`` header (RFC 9110 q-values).

    ``es;q=0.2, en;q=0.8`` is English; ``fr, es;q=0.5`` is Spanish (French is not spoken
    here); a language with ``q=0`` is refused even if a wildcard would allow it; on equal
    weights the one listed first wins; nothing usable gives English.
    """
    if not accept_language:
        return DEFAULT_LOCALE
    best: tuple[float, int, str] | None = None
    refused: set[str] = set()
    wildcard: tuple[float, int] | None = None
    for position, part in enumerate(accept_language.split(",")[:50]):
        pieces = [p.strip() for p in part.split(";")]
        tag = pieces[0].lower()
        if not tag:
            continue
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
                quality = min(1.0, max(0.0, quality)) if quality == quality else 0.0  # NaN
        if tag == "*":
            wildcard = (quality, position)
            continue
        primary = tag.split("-")[0]
        if primary not in LOCALES:
            continue
        if quality <= 0.0:
            refused.add(primary)
            continue
        # Higher quality first; on a tie, the one listed first.
        candidate = (quality, -position, primary)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    if best is not None:
        return best[2]
    if wildcard is not None and wildcard[0] > 0:
        for locale in LOCALES:
            if locale not in refused:
                return locale
    return DEFAULT_LOCALE


@cache
def translations(locale: str) -> _gettext.NullTranslations:
    """The translations for ``locale`` (English: the messages as written)."""
    locale = normalize(locale)
    if locale == DEFAULT_LOCALE:
        return _gettext.NullTranslations()
    po = LOCALES_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"
    with _lock:
        try:
            with open(po, "rb") as source:
                catalog = read_po(source, locale=locale, domain=DOMAIN)
        except FileNotFoundError:
            log.error("no translations for %s at %s; showing English", locale, po)
            return _gettext.NullTranslations()
        compiled = io.BytesIO()
        write_mo(compiled, catalog, use_fuzzy=False)
        compiled.seek(0)
        return Translations(fp=compiled, domain=DOMAIN)


def gettext(locale: str, message: str) -> str:
    """``message`` in ``locale``."""
    return translations(locale).gettext(message)


def ngettext(locale: str, singular: str, plural: str, n: int) -> str:
    """The singular or plural form of a message in ``locale`` for ``n``."""
    return translations(locale).ngettext(singular, plural, n)


def lazy(message: str) -> str:
    """Mark ``message`` for extraction where it is defined; translate it where it is shown."""
    return message
