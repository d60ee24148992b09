"""The pages in a real browser (Debian's Chromium driven by Playwright), on a phone-sized
screen, in English and Spanish: the instant journey and the commission journey, with the
strict Content-Security-Policy in force. Screenshots are kept in test-artifacts/browser/ --
look at them."""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atelier.web.app import create_app

from tests.web.web_fixtures import LiveServer
from tests.service.service_fixtures import add_catalog_style, free_port, make_settings, small_jpeg

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
PHONE = {"width": 390, "height": 844}
TEXT = {
    "en": {"heading": "Turn a photo into a painting", "painted": "Painted in", "ready": "Finished!", "preview": "Your artwork"},
    "es": {"heading": "Convierte una foto en un cuadro", "painted": "Pintada en", "ready": "¡Listo!", "preview": "Tu obra"},
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, style_dir: Path) -> Iterator[tuple[str, Path]]:
    """A live server with a worker inside, a catalog style with a short recipe, mail to the
    outbox folder (the laptop setup)."""
    data = tmp_path_factory.mktemp("browser-site")
    port = free_port()
    settings = make_settings(
        data, models_dir, public_url=f"http://127.0.0.1:{port}", preview_max_size=128, instant_max_size=384, workers=1
    )
    add_catalog_style(settings, style_dir, passes="64x10,128x20")
    with LiveServer(create_app(settings, workers=1), port) as server:
        yield server.url, data


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium (scripts/test-services does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A phone-sized page in the test's language; fails the test on any script error or CSP
    violation."""
    lang = request.node.callspec.params["lang"]
    from playwright.sync_api import expect

    # Generous waits: on 2 shared cores a request can take seconds while a painting runs.
    expect.set_options(timeout=30_000)
    context = browser.new_context(viewport=PHONE, locale={"en": "en-GB", "es": "es-ES"}[lang], device_scale_factor=2)
    context.set_default_timeout(60_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    yield page
    context.close()
    assert not problems, problems


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, content_dir: Path, style_dir: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("browser-files")
    photo = folder / "dog.jpg"
    photo.write_bytes(small_jpeg(content_dir / "dog.jpg", 640))
    painting = folder / "la_muse.jpg"
    painting.write_bytes(small_jpeg(style_dir / "la_muse.jpg", 512))
    return {"photo": photo, "painting": painting}


@pytest.mark.parametrize("lang", ["en", "es"])
def test_the_instant_journey(page, site: tuple[str, Path], files: dict[str, Path], lang: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    base, _ = site
    text = TEXT[lang]
    page.goto(base + "/")  # Accept-Language from the browser's locale picks the language
    expect(page).to_have_url(f"{base}/{lang}/")
    expect(page.locator("h1")).to_have_text(text["heading"])
    expect(page.locator("html")).to_have_attribute("lang", lang)
    # The style strip scrolls sideways; the page itself never does.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.wait_for_load_state("networkidle")
    shot(page, f"instant-1-start-{lang}")

    # The drop zone is reachable from the keyboard and takes a file.
    page.keyboard.press("Tab")  # skip link
    for _ in range(6):
        if page.evaluate("document.activeElement.id") == "photo":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "photo"
    page.set_input_files("#photo", str(files["photo"]))
    status = page.locator("#result .status")
    expect(status).to_contain_text(text["painted"], timeout=90_000)
    result = page.locator("#result-image")
    first_src = result.get_attribute("src")
    assert first_src and first_src.startswith("blob:")
    assert page.evaluate("document.getElementById('result-image').naturalWidth") == 384
    expect(page.locator("#download")).to_have_attribute("download", "atelier-candy.jpg")

    # Another style, chosen from the keyboard: the photo is not sent again.
    uploads = []
    page.on("request", lambda r: uploads.append(r.url) if r.method == "POST" else None)
    page.locator("#style-candy").focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#style-mosaic")).to_be_checked()
    expect(page.locator("#download")).to_have_attribute("download", "atelier-mosaic.jpg", timeout=60_000)
    expect(status).to_contain_text(text["painted"])
    assert result.get_attribute("src") != first_src
    assert uploads == []

    # The strength slider repaints from the cached photo.
    page.fill("#strength", "40")
    expect(page.locator("#strength-value")).to_have_text("40 %")
    page.wait_for_url(re.compile(r"strength=40"), timeout=60_000)

    # Before/after: the slider uncovers the photo.
    page.fill("#compare", "50")
    assert page.evaluate("getComputedStyle(document.querySelector('[data-compare]')).getPropertyValue('--split')").strip() == "50%"
    page.locator("#result").scroll_into_view_if_needed()
    shot(page, f"instant-2-result-{lang}")

    # Your own painting as the style.
    page.click("label[for=style-own]")
    page.set_input_files("#painting", str(files["painting"]))
    expect(page.locator("#download")).to_have_attribute("download", "atelier-painting.jpg", timeout=60_000)
    expect(status).to_contain_text(text["painted"])
    shot(page, f"instant-3-own-painting-{lang}")


@pytest.mark.parametrize("lang", ["en", "es"])
def test_the_commission_journey(page, site: tuple[str, Path], files: dict[str, Path], lang: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    base, data = site
    text = TEXT[lang]
    page.goto(f"{base}/{lang}/commission")
    page.set_input_files("#photo", str(files["photo"]))
    expect(page.locator("#style-starry_night")).to_be_checked()
    page.fill("#email", f"{lang}@example.com")
    page.wait_for_load_state("networkidle")
    shot(page, f"commission-1-form-{lang}")
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(rf"/{lang}/artworks/[0-9a-f]{{32}}$"))

    # Live progress, with the canvas as it grows.
    canvas = page.locator("[data-canvas-image]")
    expect(canvas).to_be_visible(timeout=180_000)
    if text["ready"] not in page.locator("[data-status]").inner_text():  # still painting
        expect(page.locator("[data-progress]")).to_be_visible()
    shot(page, f"commission-2-painting-{lang}")
    expect(page.locator("[data-status]")).to_contain_text(text["ready"], timeout=300_000)
    expect(page.locator("[data-progress]")).to_be_hidden()
    shot(page, f"commission-3-done-{lang}")

    # The mail (the outbox folder on a laptop), then its link.
    link = None
    deadline = time.monotonic() + 30
    while link is None and time.monotonic() < deadline:
        for path in sorted((data / "outbox").glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"] == f"{lang}@example.com":
                found = re.search(r"http://\S+/a/[A-Za-z0-9_-]+", message.get_body(("plain",)).get_content())
                link = found.group(0) if found else None
        time.sleep(0.2)
    assert link and f"/{lang}/a/" in link
    page.goto(link)
    expect(page.locator("h1")).to_have_text(text["preview"])
    picture = page.locator(".artwork-preview img")
    expect(picture).to_be_visible()
    page.wait_for_function("() => document.querySelector('.artwork-preview img').complete")
    assert page.evaluate("document.querySelector('.artwork-preview img').naturalWidth") == 128
    shot(page, f"commission-4-preview-{lang}")
