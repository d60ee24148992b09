"""The captcha is verified server-side against the provider's endpoint and fails closed.

The provider's servers cannot be reached from here, so a fake verify endpoint runs on loopback
and the real HTTP path (a form POST of secret, response and remoteip) goes to it through the
ATELIER_CAPTCHA_VERIFY_URL override.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from atelier.config import Settings
from atelier.service.captcha import VERIFY_URLS, Captcha, CaptchaFailedError, CaptchaUnavailableError

from tests.service.captcha_fixtures import FakeVerify


@pytest.fixture
def fake() -> Iterator[FakeVerify]:
    server = FakeVerify()
    yield server
    server.close()


def make(tmp_path: Path, provider: str, url: str, timeout: float = 2.0) -> Captcha:
    settings = Settings(
        data_dir=tmp_path,
        captcha_provider=provider,
        captcha_site_key="site-key",
        captcha_secret="the-secret",
        captcha_verify_url=url,
        captcha_timeout=timeout,
    )
    captcha = Captcha.from_settings(settings)
    assert captcha is not None
    return captcha


def test_it_is_off_by_default(tmp_path: Path) -> None:
    assert Captcha.from_settings(Settings(data_dir=tmp_path)) is None


def test_a_provider_without_its_keys_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CAPTCHA_SECRET"):
        Captcha.from_settings(Settings(data_dir=tmp_path, captcha_provider="turnstile", captcha_site_key="k"))


@pytest.mark.parametrize("provider", ["turnstile", "recaptcha", "hcaptcha"])
def test_the_official_endpoints_are_the_default(tmp_path: Path, provider: str) -> None:
    settings = Settings(data_dir=tmp_path, captcha_provider=provider, captcha_site_key="k", captcha_secret="s")
    captcha = Captcha.from_settings(settings)
    assert captcha is not None and captcha.verify_url == VERIFY_URLS[provider]
    assert captcha.verify_url.startswith("https://")


@pytest.mark.parametrize("provider", ["turnstile", "recaptcha", "hcaptcha"])
def test_a_good_token_passes_and_the_secret_token_and_address_are_posted(tmp_path: Path, fake: FakeVerify, provider: str) -> None:
    make(tmp_path, provider, fake.url).verify("token-from-widget", remote_ip="203.0.113.9")
    assert fake.requests == [{"secret": ["the-secret"], "response": ["token-from-widget"], "remoteip": ["203.0.113.9"]}]


def test_a_token_the_provider_refuses_is_refused(tmp_path: Path, fake: FakeVerify) -> None:
    fake.answer = {"success": False, "error-codes": ["invalid-input-response"]}
    with pytest.raises(CaptchaFailedError):
        make(tmp_path, "turnstile", fake.url).verify("bad", remote_ip=None)


def test_no_token_is_refused_without_asking(tmp_path: Path, fake: FakeVerify) -> None:
    with pytest.raises(CaptchaFailedError):
        make(tmp_path, "hcaptcha", fake.url).verify("  ", remote_ip="1.2.3.4")
    assert fake.requests == []


def test_a_low_recaptcha_score_is_refused(tmp_path: Path, fake: FakeVerify) -> None:
    fake.answer = {"success": True, "score": 0.1}
    with pytest.raises(CaptchaFailedError):
        make(tmp_path, "recaptcha", fake.url).verify("t", remote_ip=None)
    fake.answer = {"success": True, "score": 0.9}
    make(tmp_path, "recaptcha", fake.url).verify("t", remote_ip=None)


@pytest.mark.parametrize(
    "answer,status",
    [("<html>bad gateway</html>", 502), ("not json", 200), ('{"success": "yes"}', 200), ("[]", 200)],
    ids=["http-502", "garbage", "truthy-not-true", "not-an-object"],
)
def test_odd_answers_fail_closed(tmp_path: Path, fake: FakeVerify, answer: str, status: int) -> None:
    fake.answer, fake.status = answer, status
    with pytest.raises((CaptchaUnavailableError, CaptchaFailedError)):
        make(tmp_path, "turnstile", fake.url).verify("t", remote_ip=None)


def test_an_unreachable_provider_fails_closed(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    with pytest.raises(CaptchaUnavailableError):
        make(tmp_path, "turnstile", f"http://127.0.0.1:{port}/siteverify").verify("t", remote_ip=None)


def test_a_slow_provider_fails_closed_after_the_timeout(tmp_path: Path, fake: FakeVerify) -> None:
    fake.delay = 60.0  # far past the 0.3 s timeout: a client that waited for the answer would get it
    with pytest.raises(CaptchaUnavailableError):
        make(tmp_path, "hcaptcha", fake.url, timeout=0.3).verify("t", remote_ip=None)
    # The provider got the question and had not answered yet: the client gave up on its timeout.
    assert len(fake.requests) == 1 and fake.answered == 0
