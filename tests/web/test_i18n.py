"""Every message a user reads exists in Spanish: templates, pages' Python, mails, style names."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract, extract_from_dir
from babel.messages.pofile import read_po

from atelier.service import i18n
from atelier.service.mail import MAILS_DIR

SRC = Path(__file__).resolve().parents[2] / "src" / "atelier"
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy": None}
# In Python, i18n.gettext(locale, message) takes the message second.
PY_KEYWORDS = {"_": None, "gettext": (2,), "ngettext": (2, 3), "lazy": None}


def used_messages() -> set[str]:
    """Every msgid in the templates, the web and service modules, and the mail templates."""
    found: set[str] = set()

    def add(messages, index: int) -> None:  # type: ignore[no-untyped-def]
        for entry in messages:
            message = entry[index]
            if isinstance(message, tuple):
                found.update(m for m in message if m)
            elif message:
                found.add(message)

    # extract_from_dir yields (file, line, message, ...), extract (line, message, ...).
    add(extract_from_dir(str(SRC / "web" / "templates"), method_map=[("**.html", "jinja2")], keywords=KEYWORDS), 2)
    for module in [*(SRC / "web").glob("*.py"), SRC / "service" / "catalog.py", SRC / "service" / "mail.py", SRC / "service" / "pricing.py", SRC / "service" / "progress.py"]:
        with open(module, "rb") as source:
            add(extract("python", source, keywords=PY_KEYWORDS), 1)
    add(extract_from_dir(str(MAILS_DIR), method_map=[("*.html", "jinja2"), ("*.txt", "jinja2")], keywords=KEYWORDS), 2)
    return found


def spanish() -> dict[str, str]:
    with open(i18n.LOCALES_DIR / "es" / "LC_MESSAGES" / "messages.po", "rb") as source:
        catalog = read_po(source, locale="es")
    return {m.id: m.string for m in catalog if m.id and not m.fuzzy}  # type: ignore[misc]


def test_every_message_has_a_spanish_translation() -> None:
    used = used_messages()
    assert len(used) > 60  # the extraction found the pages, not nothing
    translated = {k for k, v in spanish().items() if v}
    missing = sorted(used - translated)
    assert not missing, "no Spanish for:\n" + "\n".join(missing)


def test_the_catalog_holds_no_stale_messages() -> None:
    stale = sorted(set(spanish()) - used_messages())
    assert not stale, "translated but no longer used:\n" + "\n".join(stale)


def test_placeholders_survive_translation() -> None:
    import re

    for msgid, msgstr in spanish().items():
        assert sorted(re.findall(r"%\(\w+\)s|%%", msgid)) == sorted(re.findall(r"%\(\w+\)s|%%", msgstr)), msgid


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("es-ES,es;q=0.9,en;q=0.8", "es"),
        ("en-US,en;q=0.9,es;q=0.8", "en"),
        ("en;q=0.4, es;q=0.9", "es"),
        ("fr-FR, es;q=0.5, en;q=0.3", "es"),
        ("de, fr", "en"),
        ("es;q=0, *", "en"),
        ("*;q=0.5", "en"),
        ("", "en"),
        ("es-419", "es"),
        ("ES", "es"),
        ("es;q=abc, en;q=0.1", "en"),
    ],
)
def test_accept_language_is_negotiated_with_q_values(header: str, expected: str) -> None:
    assert i18n.negotiate(header) == expected
