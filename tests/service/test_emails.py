"""Email addresses at the door (service/emails.py): a real validator (email-validator, syntax
only -- no DNS here), RFC 2047 encoded words refused, and the form an address is rate-limited
under (plus tags and Gmail's dots do not make a new address)."""

from __future__ import annotations

import pytest

from atelier.service.emails import EmailAddressError, limit_key, validate_address

#: Addresses that once got past the door. The encoded words decode, in a mail client's To: line,
#: to other recipients, markup, or a header break.
HOSTILE = [
    "=?utf-8?q?attacker=40evil.test=2C_second=40evil.test=2C?=@example.com",
    "=?utf-8?q?=3Cscript=3E?=@example.com",
    "=?utf-8?q?ana=0D=0ABcc=3A_x=40evil.test?=@example.com",
    "=?UTF-8?B?PHNjcmlwdD4=?=@example.com",
    "ana@example.com\r\nBcc: x@evil.test",
    "ana@example.com, bob@example.com",
    "Ana <ana@example.com>",
    '"ana"@example.com',
    "ana@localhost",
    "ana@[127.0.0.1]",
    "ana@@example.com",
    "a" * 65 + "@example.com",
    "",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_and_malformed_addresses_are_refused(text: str) -> None:
    with pytest.raises(EmailAddressError):
        validate_address(text)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("ana@example.com", "ana@example.com"),
        ("  Ana.Lopez+art@Example.COM ", "Ana.Lopez+art@example.com"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("jose@correo.es", "jose@correo.es"),
        ("ana@exämple.com", "ana@exämple.com"),
    ],
)
def test_ordinary_addresses_are_kept_as_given_with_the_domain_in_lower_case(text: str, kept: str) -> None:
    assert validate_address(text) == kept


def test_plus_tags_case_and_gmail_dots_do_not_make_another_address_for_the_limits() -> None:
    assert limit_key("pe@example.com") == limit_key("PE+1@Example.com") == limit_key("pe+anything+else@EXAMPLE.COM")
    assert limit_key("p.e.x@gmail.com") == limit_key("pex+2@googlemail.com") == limit_key("PEX@GMail.com")
    # Dots are only meaningless at Gmail; elsewhere they are another mailbox.
    assert limit_key("p.e@example.com") != limit_key("pe@example.com")
    assert limit_key("pe@example.com") != limit_key("pe@example.org")


def test_the_limit_key_of_anything_is_a_string() -> None:
    # The per-email limit is counted before the address is checked; garbage gets a key too.
    for text in ("not an address", "@", "+@", "x@", "=?utf-8?q?x?=@example.com"):
        assert isinstance(limit_key(text), str) and limit_key(text)
