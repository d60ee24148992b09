"""Email addresses people type: checked at the door, and the form their limits count.

:func:`validate_address` is the one check every address goes through before it is kept (the
commission and video forms, through ``check_email``) and again before a mail leaves (the
sender refuses for good what does not pass, rather than retrying it). It uses email-validator,
the validator pydantic uses, for the syntax (RFC 5321/5322 addr-spec, internationalised domains
and mailboxes, lengths), with deliverability checks off (no DNS lookups on a web request), and
refuses on top:

* **RFC 2047 encoded words** (``=?utf-8?q?...?=``). They are legal characters in a local part,
  so a syntax check lets them through, but RFC 2047 section 5 forbids them in an addr-spec,
  and mail clients decode them in the ``To:`` line: ``=?utf-8?q?a=40evil.test=2C?=@example.com``
  shows as another recipient, ``=?utf-8?q?=3Cscript=3E?=@example.com`` as markup, and an
  encoded CR/LF breaks the header.
* **Quoted local parts, IP-address domains and domains without a dot**: email-validator's
  defaults, kept (nobody buys a painting from ``"a b"@[10.0.0.1]``).

:func:`limit_key` is the form an address is rate-limited under: the same mailbox however it is
written (case, ``+tags``, Gmail's dots), so that ``pe+1@`` does not escape a limit ``pe@`` hit.
The mail still goes to the address as given.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

#: The start and end of an RFC 2047 encoded word, anywhere in the address.
_ENCODED_WORD = re.compile(r"=\?.*\?=", re.DOTALL)
#: Mail providers whose mailboxes ignore dots in the local part, and their one domain.
_DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


class EmailAddressError(ValueError):
    """An address that cannot be accepted (the message says why, for the person who typed it)."""


def validate_address(text: str) -> str:
    """The address, trimmed, with its domain in lower case, if it is one we can mail;
    :class:`EmailAddressError` if not."""
    address = (text or "").strip()
    if not address:
        raise EmailAddressError("the email address is empty")
    if _ENCODED_WORD.search(address):
        raise EmailAddressError("the email address contains an encoded word (=?...?=), which an address cannot have")
    try:
        # strict: the RFC 5321 limit of 64 characters before the @ too.
        checked = validate_email(address, check_deliverability=False, strict=True)
    except EmailNotValidError as exc:
        raise EmailAddressError(str(exc)) from None
    # normalized: the local part as typed (mailboxes may be case-sensitive), the domain in
    # lower case (Unicode form for an internationalised one).
    return str(checked.normalized)


def limit_key(text: str) -> str:
    """The form of an address its rate limits are counted under: lower case, without a
    ``+tag``, without dots at Gmail. Anything, even what is not an address, gets a key (the
    per-email limit is counted before the form is checked)."""
    local, at, domain = (text or "").strip().lower().rpartition("@")
    if not at:
        return domain
    local = local.split("+", 1)[0]
    domain = domain.rstrip(".")
    if domain in _DOTLESS_DOMAINS:
        domain = _DOTLESS_DOMAINS[domain]
        local = local.replace(".", "")
    return f"{local}@{domain}"
