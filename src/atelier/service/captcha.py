"""Bot checks with a pluggable captcha: Cloudflare Turnstile, Google reCAPTCHA or hCaptcha.

Off by default (ATELIER_CAPTCHA_PROVIDER=none). When on, the page shows the provider's widget,
the browser sends the token it produced with the form, and :meth:`Captcha.verify` asks the
provider's verification endpoint, server-side, whether the token is good: a POST of the secret,
the token and the client's address, the same for all three providers.

It **fails closed**: a provider that cannot be reached, times out or answers something that is not
a success refuses the request (:class:`CaptchaUnavailableError`, :class:`CaptchaFailedError`).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from atelier.config import Settings

log = logging.getLogger(__name__)

PROVIDERS: tuple[str, ...] = ("turnstile", "recaptcha", "hcaptcha")

#: The official server-side verification endpoints.
VERIFY_URLS: dict[str, str] = {
    "turnstile": "https://challenges.cloudflare.com/turnstile/v0/siteverify",
    "recaptcha": "https://www.google.com/recaptcha/api/siteverify",
    "hcaptcha": "https://api.hcaptcha.com/siteverify",
}
#: The form field each provider's widget fills with its token.
RESPONSE_FIELDS: dict[str, str] = {
    "turnstile": "cf-turnstile-response",
    "recaptcha": "g-recaptcha-response",
    "hcaptcha": "h-captcha-response",
}
#: The widget's script and the element class it renders into.
SCRIPTS: dict[str, str] = {
    "turnstile": "https://challenges.cloudflare.com/turnstile/v0/api.js",
    "recaptcha": "https://www.google.com/recaptcha/api.js",
    "hcaptcha": "https://js.hcaptcha.com/1/api.js",
}
WIDGET_CLASSES: dict[str, str] = {"turnstile": "cf-turnstile", "recaptcha": "g-recaptcha", "hcaptcha": "h-captcha"}
#: Origins the Content-Security-Policy must allow for the widget (scripts, frames, calls).
CSP_ORIGINS: dict[str, tuple[str, ...]] = {
    "turnstile": ("https://challenges.cloudflare.com",),
    "recaptcha": ("https://www.google.com/recaptcha/", "https://www.gstatic.com/recaptcha/", "https://recaptcha.google.com/recaptcha/"),
    "hcaptcha": ("https://hcaptcha.com", "https://*.hcaptcha.com"),
}
#: Field or header an API client may use for the token, whatever the provider.
GENERIC_FIELD = "captcha_token"
HEADER = "x-captcha-token"
#: reCAPTCHA v3 answers a score (1.0 human .. 0.0 bot); below this the token is refused.
MIN_SCORE = 0.5
#: A token longer than this is not sent on (the providers' tokens are ~2 KiB at most).
MAX_TOKEN = 4096


class CaptchaError(Exception):
    """The bot check refused the request (the message is for the user)."""


class CaptchaFailedError(CaptchaError):
    """No token, or the provider said the token is not good."""


class CaptchaUnavailableError(CaptchaError):
    """The provider could not be asked (network, timeout, a garbled answer): refused anyway."""


@dataclass(frozen=True)
class Captcha:
    """One provider's configuration."""

    provider: str
    site_key: str
    secret: str
    verify_url: str
    timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Captcha | None:
        """The configured captcha, or None when it is off. A provider without its keys is a
        configuration error, raised at start-up rather than discovered by users."""
        provider = settings.captcha_provider
        if provider == "none":
            return None
        if not settings.captcha_site_key or not settings.captcha_secret:
            raise ValueError(
                f"ATELIER_CAPTCHA_PROVIDER={provider} needs ATELIER_CAPTCHA_SITE_KEY and ATELIER_CAPTCHA_SECRET"
            )
        return cls(
            provider=provider,
            site_key=settings.captcha_site_key,
            secret=settings.captcha_secret,
            verify_url=settings.captcha_verify_url or VERIFY_URLS[provider],
            timeout=settings.captcha_timeout,
        )

    @property
    def response_field(self) -> str:
        return RESPONSE_FIELDS[self.provider]

    @property
    def script_url(self) -> str:
        return SCRIPTS[self.provider]

    @property
    def widget_class(self) -> str:
        return WIDGET_CLASSES[self.provider]

    @property
    def csp_origins(self) -> tuple[str, ...]:
        return CSP_ORIGINS[self.provider]

    def verify(self, token: str | None, *, remote_ip: str | None) -> None:
        """Ask the provider about ``token``; return if it is good, raise otherwise.

        Blocking (a plain HTTP POST with a timeout): call it from a worker thread.
        """
        if not token or not token.strip():
            raise CaptchaFailedError("please complete the bot check")
        if len(token) > MAX_TOKEN:
            raise CaptchaFailedError("the bot check's answer is not valid")
        form = {"secret": self.secret, "response": token.strip()}
        if remote_ip:
            form["remoteip"] = remote_ip
        request = urllib.request.Request(
            self.verify_url,
            data=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 - https URL from settings
                body = answer.read(64 * 1024)
            result = json.loads(body)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            # Timeouts, refused connections, 5xx (HTTPError is a URLError), garbage: all refuse.
            log.error("captcha: %s verification unavailable: %s", self.provider, exc)
            raise CaptchaUnavailableError("the bot check cannot be verified right now; try again in a moment") from exc
        if not isinstance(result, dict) or result.get("success") is not True:
            codes = result.get("error-codes") if isinstance(result, dict) else None
            log.info("captcha: %s refused a token (%s)", self.provider, codes)
            raise CaptchaFailedError("the bot check failed; please try again")
        score = result.get("score")
        if self.provider == "recaptcha" and isinstance(score, (int, float)) and score < MIN_SCORE:
            log.info("captcha: reCAPTCHA score %.2f below %.2f", score, MIN_SCORE)
            raise CaptchaFailedError("the bot check failed; please try again")
