"""Photos go from the page straight to the bucket (issue 19), in a real browser (Debian's
Chromium driven by Playwright) against a live server whose storage is S3 (the S3 API server on
loopback: moto behind tests/store/s3_server.py, which enforces POST policies and answers CORS
the way S3 does).

What is shown, from both ends:

* the app's own access log (every request with the bytes of its body) has no upload body: the
  page asked for a signed policy and a confirmation, a few dozen bytes each, and never posted
  the photo to the app;
* the S3 server took one POST from the page's origin carrying the photo, and the bucket holds
  the photo's exact bytes;
* the photo is painted on the page, and its progress was shown while it went up;
* a clip and the commission form's photo go the same way (the job and the form then name the
  upload).

And the ways back: a bucket whose CORS does not name the site (the page cannot read its
answer) gets the photo through the app instead, and the form without scripts posts it to the
app as it always did.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from atelier.web.app import create_app

from tests.service.service_fixtures import add_catalog_style, free_port, make_settings, small_jpeg, tiny_clip
from tests.store.s3_server import PolicyEnforcingMotoServer
from tests.web.web_fixtures import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
KEY_ID, SECRET = "direct-key", "direct-secret"


class AccessLog:
    """ASGI middleware: the app's access log with what each request's body carried (method,
    path, bytes received), counted from the body as it came in rather than from a header."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.entries: list[tuple[str, str, int]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = [scope["method"], scope["path"], 0]

        async def counting() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                entry[2] += len(message.get("body", b""))
            return message

        try:
            await self.app(scope, counting, send)
        finally:
            self.entries.append((entry[0], entry[1], entry[2]))

    # LiveServer hands the app to uvicorn, which starts the lifespan through this object.
    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


@dataclass
class Site:
    url: str
    bucket: str
    log: AccessLog
    s3: PolicyEnforcingMotoServer


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[PolicyEnforcingMotoServer, str]]:
    server = PolicyEnforcingMotoServer(ip_address="127.0.0.1", port=free_port(), secret_access_key=SECRET)
    server.start()
    yield server, "http://{}:{}".format(*server.get_host_and_port())
    server.stop()


def bucket_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)


def start_site(tmp: Path, models_dir: Path, s3: tuple[PolicyEnforcingMotoServer, str], *, cors: bool, style_dir: Path | None = None) -> Iterator[Site]:
    server, endpoint = s3
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bucket = f"direct-{uuid.uuid4().hex[:10]}"
    client = bucket_client(endpoint)
    client.create_bucket(Bucket=bucket)
    if cors:
        # What an operator sets on the bucket (docs/DEPLOY.md): the site may POST and GET.
        client.put_bucket_cors(
            Bucket=bucket,
            CORSConfiguration={"CORSRules": [{"AllowedOrigins": [url], "AllowedMethods": ["POST", "GET"], "AllowedHeaders": ["*"], "MaxAgeSeconds": 600}]},
        )
    settings = make_settings(
        tmp, models_dir, public_url=url, instant_max_size=256, storage_url=f"s3://{bucket}/site",
        s3_endpoint_url=endpoint, s3_region="us-east-1", s3_access_key_id=KEY_ID, s3_secret_access_key=SECRET,
    )
    if style_dir is not None:
        add_catalog_style(settings, style_dir, passes="48x4,96x4")  # for the commission form
    # One worker inside, for the clip's and the commission's jobs.
    log = AccessLog(create_app(settings, workers=1, mail=False))
    with LiveServer(log, port):
        yield Site(url, bucket, log, server)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, style_dir: Path, s3: tuple[PolicyEnforcingMotoServer, str]) -> Iterator[Site]:
    yield from start_site(tmp_path_factory.mktemp("direct-site"), models_dir, s3, cors=True, style_dir=style_dir)


@pytest.fixture(scope="module")
def site_without_cors(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, s3: tuple[PolicyEnforcingMotoServer, str]) -> Iterator[Site]:
    yield from start_site(tmp_path_factory.mktemp("direct-site-nocors"), models_dir, s3, cors=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium (scripts/test-services does it)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory, content_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("direct-files") / "dog.jpg"
    path.write_bytes(small_jpeg(content_dir / "dog.jpg", 640, quality=95))
    return path


def open_page(browser: Any, site: Site, *, scripts: bool = True) -> tuple[Any, list[str]]:
    """The English instant page; script errors and console errors are collected."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB", java_script_enabled=scripts)
    context.set_default_timeout(120_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.goto(f"{site.url}/en/")
    return page, problems


def stored_bytes(site: Site, endpoint: str) -> list[bytes]:
    client = bucket_client(endpoint)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=site.bucket, Prefix="site/uploads/").get("Contents", [])]
    return [client.get_object(Bucket=site.bucket, Key=key)["Body"].read() for key in keys]


def wait_painted(page: Any) -> None:
    from playwright.sync_api import expect

    expect(page.locator("[data-result-actions]")).to_be_visible(timeout=120_000)
    page.wait_for_function("() => document.getElementById('result-image').complete")
    assert page.evaluate("document.getElementById('result-image').src").startswith("blob:")
    assert page.evaluate("document.getElementById('result-image').naturalWidth") == 256  # painted at the instant size


def test_the_photo_goes_from_the_page_to_the_bucket_not_through_the_app_and_is_painted(
    browser: Any, site: Site, s3: tuple[PolicyEnforcingMotoServer, str], photo: Path
) -> None:
    data = photo.read_bytes()
    page, problems = open_page(browser, site)
    assert page.get_attribute("#instant-form", "data-direct-upload") == "1"
    before_app, before_s3 = len(site.log.entries), len(site.s3.requests)
    page.set_input_files("#photo", str(photo))
    wait_painted(page)
    page.context.close()

    app = site.log.entries[before_app:]
    posted = [(method, path) for method, path, _ in app if method == "POST"]
    assert ("POST", "/api/v1/uploads/presign") in posted and any(re.fullmatch(r"/api/v1/uploads/\w+/confirm", p) for _, p in posted), app
    assert ("POST", "/api/v1/uploads") not in posted, app
    # No request to the app carried the photo, or anything near its size.
    assert max(size for *_, size in app) < 1024 < len(data), app
    to_bucket = [(m, p, n, o) for m, p, n, o in site.s3.requests[before_s3:] if m == "POST" and p.strip("/") == site.bucket]
    assert len(to_bucket) == 1 and to_bucket[0][2] > len(data) and to_bucket[0][3] == site.url, to_bucket
    assert data in stored_bytes(site, s3[1])  # checked by the app and kept: the very bytes
    assert not problems, problems


def test_an_own_painting_goes_to_the_bucket_too(browser: Any, site: Site, photo: Path, style_dir: Path, tmp_path: Path) -> None:
    painting = tmp_path / "la_muse.jpg"
    painting.write_bytes(small_jpeg(style_dir / "la_muse.jpg", 512))
    page, problems = open_page(browser, site)
    page.set_input_files("#photo", str(photo))
    wait_painted(page)
    before_app, before_s3 = len(site.log.entries), len(site.s3.requests)
    page.click("label[for=style-own]")
    page.set_input_files("#painting", str(painting))
    page.wait_for_function("() => /atelier-painting/.test(document.getElementById('download').getAttribute('download') || '')")
    page.context.close()
    app = site.log.entries[before_app:]
    assert ("POST", "/api/v1/uploads") not in [(m, p) for m, p, _ in app]
    assert max(size for *_, size in app) < 1024, app
    to_bucket = [n for m, p, n, o in site.s3.requests[before_s3:] if m == "POST" and p.strip("/") == site.bucket and o == site.url]
    assert len(to_bucket) == 1 and to_bucket[0] > painting.stat().st_size, to_bucket
    assert not problems, problems


def test_the_upload_shows_its_progress(browser: Any, site: Site, photo: Path) -> None:
    page, problems = open_page(browser, site)
    page.evaluate(
        "() => { window.statuses = []; const s = document.getElementById('status');"
        " new MutationObserver(() => window.statuses.push(s.textContent.trim())).observe(s, {childList: true, characterData: true, subtree: true}); }"
    )
    page.set_input_files("#photo", str(photo))
    wait_painted(page)
    statuses = page.evaluate("window.statuses")
    page.context.close()
    assert any(re.fullmatch(r"Sending your photo… \d+ %", text) for text in statuses), statuses
    assert not problems, problems


def test_a_clip_goes_to_the_bucket_too_and_its_job_names_the_upload(browser: Any, site: Site, tmp_path: Path, content_dir: Path) -> None:
    from playwright.sync_api import expect

    clip = tiny_clip(tmp_path / "clip.mp4", content_dir / "dog.jpg", frames=6)
    size = clip.stat().st_size
    page, problems = open_page(browser, site)
    before_app, before_s3 = len(site.log.entries), len(site.s3.requests)
    page.set_input_files("#photo", str(clip))
    expect(page.locator("[data-video-player]")).to_be_visible(timeout=180_000)
    page.context.close()
    app = site.log.entries[before_app:]
    videos = [n for m, p, n in app if (m, p) == ("POST", "/api/v1/videos")]
    assert len(videos) == 1 and videos[0] < 1024 < size, app  # the form names the upload, no clip in it
    assert ("POST", "/api/v1/uploads") not in [(m, p) for m, p, _ in app]
    to_bucket = [n for m, p, n, o in site.s3.requests[before_s3:] if m == "POST" and p.strip("/") == site.bucket and o == site.url]
    assert len(to_bucket) == 1 and to_bucket[0] > size, to_bucket
    assert not problems, problems


def test_the_commission_form_sends_its_photo_to_the_bucket_and_names_the_upload(
    browser: Any, site: Site, s3: tuple[PolicyEnforcingMotoServer, str], photo: Path
) -> None:
    data = photo.read_bytes()
    page, problems = open_page(browser, site)
    page.goto(f"{site.url}/en/commission")
    before_app, before_s3 = len(site.log.entries), len(site.s3.requests)
    page.set_input_files("#photo", str(photo))
    page.fill("#email", "ana@example.com")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/en/artworks/[0-9a-f]{32}$"))
    page.context.close()
    app = site.log.entries[before_app:]
    form = [size for method, path, size in app if (method, path) == ("POST", "/en/commission")]
    assert len(form) == 1 and form[0] < 2048 < len(data), app  # the form names the upload
    to_bucket = [n for m, p, n, o in site.s3.requests[before_s3:] if m == "POST" and p.strip("/") == site.bucket and o == site.url]
    assert len(to_bucket) == 1 and to_bucket[0] > len(data), to_bucket
    assert data in stored_bytes(site, s3[1])
    assert not problems, problems


def test_a_bucket_that_does_not_allow_the_site_gets_the_photo_through_the_app(
    browser: Any, site_without_cors: Site, photo: Path
) -> None:
    site = site_without_cors
    data = photo.read_bytes()
    page, problems = open_page(browser, site)
    before = len(site.log.entries)
    page.set_input_files("#photo", str(photo))
    wait_painted(page)
    page.context.close()
    app = site.log.entries[before:]
    through = [size for method, path, size in app if (method, path) == ("POST", "/api/v1/uploads")]
    assert len(through) == 1 and through[0] > len(data), app
    # The browser says why it could not use the bucket (CORS); nothing else went wrong.
    assert all("CORS" in text or "Failed to load resource" in text for text in problems), problems


def test_without_scripts_the_form_posts_the_photo_to_the_app_and_shows_the_painting(browser: Any, site: Site, photo: Path) -> None:
    data = photo.read_bytes()
    page, problems = open_page(browser, site, scripts=False)
    assert page.get_attribute("#instant-form", "data-direct-upload") == "1"  # there, but nothing reads it
    before = len(site.log.entries)
    page.set_input_files("#photo", str(photo))
    page.locator(".controls button[type=submit]").click()
    page.wait_for_url(re.compile(r"/en/\?photo=\w+"))
    page.wait_for_function("() => { const i = document.getElementById('result-image'); return i && i.complete && i.naturalWidth > 0; }")
    assert page.evaluate("document.getElementById('result-image').naturalWidth") == 256
    page.context.close()
    app = site.log.entries[before:]
    form = [size for method, path, size in app if (method, path) == ("POST", "/en/instant")]
    assert len(form) == 1 and form[0] > len(data), app
    assert not problems, problems
