"""The pages in a real browser (Debian's Chromium driven by Playwright), at a phone's size
(390x844) and a laptop's (1280x800), in English and Spanish, with the strict
Content-Security-Policy in force (a script error or a CSP violation fails the test).

What a person must be able to count on, asserted rather than only screenshotted:

* the picture: after painting, the result is on screen without scrolling;
* nothing marked ``hidden`` shows, in any state these tests reach (:func:`nothing_hidden_shows`);
* every style can be reached, from the keyboard and visibly with a pointer (arrows, or a grid);
* errors keep the page consistent (a bad photo leaves the last good painting, a bad painting
  leaves no broken tile chosen) and are shown where the person is looking;
* the commission never ends in a dead end: the status page leads to the preview, the preview
  to paying, then to the receipt, which shows the picture and where the download stands;
* Back after a refused form shows the form again (POST-redirect-GET: no resubmission prompt).

One browser and one live server (with a worker inside) for the module; the screenshots of the
pages are taken by ``scripts/screenshots``, not here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atelier.web.app import create_app

from tests.service.service_fixtures import add_catalog_style, free_port, make_settings, small_jpeg, tiny_clip
from tests.web.web_fixtures import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
SIZES = {"phone": {"width": 390, "height": 844}, "wide": {"width": 1280, "height": 800}}
COMBINATIONS = [("en", "phone"), ("es", "phone"), ("en", "wide"), ("es", "wide")]
TEXT = {
    "en": {
        "heading": "Turn a photo into a painting", "choose_photo": "Choose a photo first.", "unreadable": "We could not read this picture",
        "choose_painting": "Choose the painting", "own_status": "Choose the painting to copy the style of.",
        "smaller": "Made smaller: 384 × 288 pixels from your 640 × 480",
        "ready": "Finished!", "bad_email": "That email address does not look right", "minimum": "The minimum is",
        "delivered": "Delivered", "downloads": "downloads left", "paid": "Paid, thank you",
    },
    "es": {
        "heading": "Convierte una foto en un cuadro", "choose_photo": "Primero elige una foto.", "unreadable": "No hemos podido leer esta imagen",
        "choose_painting": "Elegir el cuadro", "own_status": "Elige el cuadro cuyo estilo quieres copiar.",
        "smaller": "Reducida a 384 × 288 píxeles; tu foto mide 640 × 480",
        "ready": "¡Listo!", "bad_email": "Esa dirección de correo no parece correcta", "minimum": "El mínimo es",
        "delivered": "Entregada", "downloads": "descargas", "paid": "Pagado, gracias",
    },
}
FILTERS = ["candy", "mosaic", "rain_princess", "udnie", "pointilism"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, style_dir: Path) -> Iterator[tuple[str, Path]]:
    """A live server with a worker inside, two catalog paintings with a short commission recipe,
    mail to the outbox folder: the laptop setup."""
    from atelier.install.styles import StyleRecipe, add_style

    data = tmp_path_factory.mktemp("browser-site")
    port = free_port()
    settings = make_settings(
        data, models_dir, public_url=f"http://127.0.0.1:{port}", preview_max_size=128, instant_max_size=384, workers=1
    )
    add_catalog_style(settings, style_dir, passes="64x10,128x20")
    add_style(style_dir / "la_muse.jpg", name="la_muse", styles_dir=settings.styles_path,
              titles={"en": "La Muse", "es": "La musa"}, artist="Pablo Picasso", recipe=StyleRecipe(base="auto", passes="64x10,128x20"))
    with LiveServer(create_app(settings, workers=1), port) as server:
        yield server.url, data


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium (scripts/test-services does it)")
    from playwright.sync_api import expect, sync_playwright

    # Generous waits: on 2 shared cores a request can take seconds while a painting runs.
    expect.set_options(timeout=60_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


class Pages:
    """Opens pages at a size and in a language; every page fails its test on a script error or
    a CSP violation."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.problems: list[str] = []

    def open(self, lang: str, size: str) -> Any:
        context = self.browser.new_context(viewport=SIZES[size], locale={"en": "en-GB", "es": "es-ES"}[lang])
        context.set_default_timeout(120_000)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("console", self._console)
        return page

    def _console(self, message: Any) -> None:
        # A refused upload (422, 413) is the page's to explain, and the tests check it does;
        # the browser logs the answer's status besides.
        if message.type == "error" and not re.match(r"Failed to load resource: the server responded with a status of 4(22|13)", message.text):
            self.problems.append(message.text)


@pytest.fixture
def pages(browser: Any) -> Iterator[Pages]:
    opened = Pages(browser)
    yield opened
    for context in opened.contexts:
        context.close()
    assert not opened.problems, opened.problems


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, content_dir: Path, style_dir: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("browser-files")
    photo = folder / "dog.jpg"
    photo.write_bytes(small_jpeg(content_dir / "dog.jpg", 640))  # larger than the site paints: it says so
    painting = folder / "la_muse.jpg"
    painting.write_bytes(small_jpeg(style_dir / "la_muse.jpg", 512))
    broken = folder / "broken.jpg"
    broken.write_bytes(b"this is not a picture")
    clip = tiny_clip(folder / "clip.mp4", content_dir / "dog.jpg", frames=6)
    return {"photo": photo, "painting": painting, "broken": broken, "clip": clip}


# ------------------------------------------------------------------------------------------------
# what every state must satisfy


def nothing_hidden_shows(page: Any) -> None:
    """No element with the ``hidden`` attribute is rendered (a class's display must not beat it)."""
    shown = page.evaluate(
        """() => [...document.querySelectorAll('[hidden]')]
                 .filter(e => e.checkVisibility() && e.getClientRects().length)
                 .map(e => e.outerHTML.slice(0, 120))"""
    )
    assert shown == [], f"hidden but visible on {page.url}: {shown}"


def box(page: Any, selector: str) -> dict[str, float]:
    return page.evaluate(
        """(s) => { const r = document.querySelector(s).getBoundingClientRect();
                    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height}; }""",
        selector,
    )


def in_viewport(page: Any, selector: str) -> bool:
    b, view = box(page, selector), page.viewport_size
    return b["width"] > 0 and b["left"] >= -0.5 and b["top"] >= -0.5 and b["right"] <= view["width"] + 0.5 and b["bottom"] <= view["height"] + 0.5


def fully_shown_cards(page: Any) -> list[str]:
    """The style cards wholly inside their strip's visible part and the viewport."""
    return page.evaluate(
        """() => { const strip = document.querySelector('[data-style-strip]').getBoundingClientRect();
                   const left = Math.max(strip.left, 0), right = Math.min(strip.right, innerWidth);
                   return [...document.querySelectorAll('[data-style-strip] [data-style-card]')]
                     .filter(c => { const r = c.getBoundingClientRect(); return r.left >= left - 1 && r.right <= right + 1; })
                     .map(c => c.querySelector('input').value); }"""
    )


def card_names(page: Any) -> list[str]:
    return page.eval_on_selector_all("[data-style-strip] input[name=style]", "inputs => inputs.map(i => i.value)")


def requests_to(page: Any, path: str) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url) if path in request.url else None)
    return seen


# ------------------------------------------------------------------------------------------------
# the instant page


@pytest.mark.parametrize(("lang", "size"), COMBINATIONS)
def test_the_instant_page_shows_the_painting_in_view_and_every_style_in_reach(
    pages: Pages, site: tuple[str, Path], files: dict[str, Path], lang: str, size: str
) -> None:
    from playwright.sync_api import expect

    base, _ = site
    text = TEXT[lang]
    page = pages.open(lang, size)
    page.goto(base + "/")  # Accept-Language from the browser's locale picks the language
    expect(page).to_have_url(f"{base}/{lang}/")
    expect(page.locator("h1")).to_have_text(text["heading"])
    page.wait_for_load_state("networkidle")
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"]  # no sideways page
    nothing_hidden_shows(page)
    cards = card_names(page)
    assert cards == [*FILTERS, "la_muse", "starry_night", "own"]

    # Every card from the keyboard: Tab into the strip, then the arrow keys walk it, and the
    # focused card is always wholly in view.
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.name") == "style":
            break
    assert page.evaluate("document.activeElement.value") == "candy"
    for name in cards[1:]:
        page.keyboard.press("ArrowRight")
        expect(page.locator(f"#style-{name}")).to_be_focused()
        page.wait_for_function("n => { const r = document.querySelector('#style-' + n).closest('[data-style-card]').getBoundingClientRect();"
                               " const s = document.querySelector('[data-style-strip]').getBoundingClientRect();"
                               " return r.left >= Math.max(s.left, 0) - 1 && r.right <= Math.min(s.right, innerWidth) + 1; }", arg=name)
    # Choosing a style before there is a photo says what to do next, under the picture's place.
    expect(page.locator("#status")).to_have_text(text["own_status"])
    # ... and with a pointer: on a phone the arrows page through the strip (none is shown where
    # there is nothing more on that side); on a wide screen the strip is a grid, all in view.
    page.evaluate("document.querySelector('[data-style-strip]').scrollLeft = 0")
    page.wait_for_function("() => document.querySelector('[data-strip-prev]').hidden")
    seen = set(fully_shown_cards(page))
    if size == "phone":
        assert seen != set(cards)
        expect(page.locator("[data-strip-next]")).to_be_visible()
        for _ in range(len(cards)):
            if page.locator("[data-strip-next]").is_hidden():
                break
            page.click("[data-strip-next]")
            page.wait_for_timeout(700)  # the smooth scroll
            seen |= set(fully_shown_cards(page))
            nothing_hidden_shows(page)
        expect(page.locator("[data-strip-prev]")).to_be_visible()
    else:
        expect(page.locator("[data-strip-next]")).to_be_hidden()
    assert seen == set(cards)

    # "Your own painting" picks its file with the page's own words, not the browser's.
    page.click("label[for=style-own]")
    expect(page.locator("label[for=painting]")).to_be_visible()
    expect(page.locator("label[for=painting]")).to_have_text(text["choose_painting"])
    assert box(page, "#painting")["width"] <= 1  # the raw "Choose File / No file chosen" is not shown
    page.click("label[for=style-candy]")

    # Painting without a photo: the reason shows where the person looks.
    page.locator(".controls button[type=submit]").click()
    expect(page.locator("#status")).to_have_text(text["choose_photo"])
    assert in_viewport(page, "#status"), (box(page, "#status"), page.evaluate("window.scrollY"))
    nothing_hidden_shows(page)

    # The photo, then its painting, in the same place; on screen without scrolling.
    page.evaluate("window.scrollTo(0, 0)")
    page.set_input_files("#photo", str(files["photo"]))
    expect(page.locator("[data-result-actions]")).to_be_visible(timeout=120_000)
    expect(page.locator("#status")).not_to_have_class(re.compile("is-busy"))
    page.wait_for_function("() => document.getElementById('result-image').complete")
    assert page.evaluate("document.getElementById('result-image').src").startswith("blob:")
    assert page.evaluate("document.getElementById('result-image').naturalWidth") == 384
    assert page.evaluate("window.scrollY") == 0
    assert in_viewport(page, "#result-image"), box(page, "#result-image")
    # A photo larger than the instant painter paints: the page says so.
    expect(page.locator("[data-size-note]")).to_contain_text(text["smaller"])
    expect(page.locator("#download")).to_have_attribute("download", "atelier-candy.jpg")
    nothing_hidden_shows(page)

    # Another style, from the keyboard: painted in the same place, still in view.
    page.locator("#style-candy").focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#download")).to_have_attribute("download", "atelier-mosaic.jpg", timeout=120_000)
    assert in_viewport(page, "#result-image")


@pytest.mark.parametrize(("lang", "size"), [("en", "phone"), ("es", "wide")])
def test_instant_errors_leave_the_page_as_it_was_and_the_options_paint(
    pages: Pages, site: tuple[str, Path], files: dict[str, Path], lang: str, size: str
) -> None:
    from playwright.sync_api import expect

    base, _ = site
    text = TEXT[lang]
    page = pages.open(lang, size)
    page.goto(f"{base}/{lang}/")
    page.set_input_files("#photo", str(files["photo"]))
    expect(page.locator("#download")).to_have_attribute("download", "atelier-candy.jpg", timeout=120_000)
    expect(page.locator("#status")).not_to_have_class(re.compile("is-busy"))
    painted = page.get_attribute("#result-image", "src")

    # A file that is not a picture: the reason in view, the last painting still there, and the
    # file field forgets the bad file.
    page.set_input_files("#photo", str(files["broken"]))
    expect(page.locator("#status")).to_contain_text(text["unreadable"])
    assert in_viewport(page, "#status")
    assert page.get_attribute("#result-image", "src") == painted
    assert page.evaluate("document.getElementById('photo').value") == ""
    expect(page.locator("[data-result-actions]")).to_be_visible()
    nothing_hidden_shows(page)

    # A bad painting as "your own": no broken tile left chosen.
    page.click("label[for=style-own]")
    page.set_input_files("#painting", str(files["broken"]))
    expect(page.locator("#status")).to_contain_text(text["unreadable"])
    expect(page.locator("#style-own")).not_to_be_checked()
    expect(page.locator("#style-candy")).to_be_checked()
    assert page.locator(".own-tile img").count() == 0
    nothing_hidden_shows(page)

    # A good one paints.
    page.click("label[for=style-own]")
    page.set_input_files("#painting", str(files["painting"]))
    expect(page.locator("#download")).to_have_attribute("download", "atelier-painting.jpg", timeout=120_000)

    # The engines' options: the photo's own colours, and a blend of two paintings.
    stylize = requests_to(page, "/api/v1/stylize?")
    page.locator("label[for=style-starry_night]").click()
    expect(page.locator("#download")).to_have_attribute("download", "atelier-starry_night.jpg", timeout=120_000)
    page.locator(".more summary").click()
    page.check("#preserve")
    page.select_option("#blend-style", "la_muse")
    expect(page.locator("#status")).not_to_have_class(re.compile("is-busy"), timeout=120_000)
    page.wait_for_timeout(300)
    assert any("preserve_color=true" in url and "blend_name=la_muse" in url and "style_name=starry_night" in url for url in stylize), stylize
    expect(page).to_have_url(re.compile(r"preserve=1.*blend_style=la_muse|blend_style=la_muse.*preserve=1"))

    # Every style on the photo: one sheet, painted in one batch, to choose from.
    page.click("[data-sheet-button]")
    expect(page.locator("[data-sheet]")).to_be_visible(timeout=180_000)
    tiles = page.eval_on_selector_all(".sheet-tile", "tiles => tiles.map(t => t.dataset.style)")
    assert tiles == [*FILTERS, "la_muse", "starry_night"]
    expect(page.locator("#result-image")).to_be_hidden()
    nothing_hidden_shows(page)
    page.click(".sheet-tile[data-style=udnie]")
    expect(page.locator("#download")).to_have_attribute("download", "atelier-udnie.jpg", timeout=120_000)
    expect(page.locator("#style-udnie")).to_be_checked()
    assert in_viewport(page, "#result-image")

    # A clip: no empty player and no live Download button while it is painted.
    page.set_input_files("#photo", str(files["clip"]))
    expect(page.locator("[data-video]")).to_be_visible()
    expect(page.locator("[data-video-player]")).to_be_hidden()
    expect(page.locator("#download")).to_be_hidden()
    nothing_hidden_shows(page)
    expect(page.locator("[data-video-player]")).to_be_visible(timeout=300_000)
    expect(page.locator("#download")).to_be_visible()
    nothing_hidden_shows(page)


# ------------------------------------------------------------------------------------------------
# the commission


@pytest.mark.timeout(1500)
@pytest.mark.parametrize(("lang", "size", "other"), [("en", "phone", "wide"), ("es", "wide", "phone")])
def test_the_commission_leads_on_at_every_step(
    pages: Pages, site: tuple[str, Path], files: dict[str, Path], lang: str, size: str, other: str
) -> None:
    """One commission from the form to the delivered receipt at one size; its pages are looked
    at again at the other size (the next step offered there too)."""
    from playwright.sync_api import expect

    base, _ = site
    text = TEXT[lang]
    page = pages.open(lang, size)
    elsewhere = pages.open(lang, other)

    def next_step(url: str, selector: str) -> None:
        """The page at the other size offers the same next step, and hides what it hides."""
        elsewhere.goto(url)
        expect(elsewhere.locator(selector).first).to_be_visible()
        nothing_hidden_shows(elsewhere)

    # A bounced form: every mistake named, the photo kept, and Back after it shows the form.
    page.goto(f"{base}/{lang}/commission")
    page.set_input_files("#photo", str(files["photo"]))
    page.fill("#email", "not-an-address@")
    page.evaluate("document.getElementById('email').type = 'text'")  # past the browser's own check
    page.click("button[type=submit]")
    expect(page.locator(".notice-error")).to_contain_text(text["bad_email"])
    expect(page).to_have_url(re.compile(rf"/{lang}/commission\?photo=\w+"))
    expect(page.locator(".chosen-photo img")).to_be_visible()
    expect(page.locator("#email")).to_have_value("not-an-address@")
    nothing_hidden_shows(page)
    page.fill("#email", f"{lang}-{size}@example.com")
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(rf"/{lang}/artworks/[0-9a-f]{{32}}$"))
    status_url = page.url
    page.go_back()
    expect(page).to_have_url(re.compile(rf"/{lang}/commission"))
    expect(page.locator("#email")).to_be_visible()
    expect(page.locator("form#order")).to_be_visible()
    page.go_forward()
    expect(page).to_have_url(status_url)

    # The status page: progress, then the way on to the preview.
    expect(page.locator("[data-status]")).to_contain_text(text["ready"], timeout=600_000)
    expect(page.locator("[data-progress]")).to_be_hidden()
    nothing_hidden_shows(page)
    expect(page.locator("[data-next-preview]")).to_be_visible()
    next_step(status_url, "[data-next-preview]")
    page.click("[data-next-preview]")
    expect(page).to_have_url(re.compile(rf"/{lang}/a/[\w-]+$"))
    preview_url = page.url

    # The preview, before paying: at its own size (not stretched), with the form to pay.
    picture = page.locator(".artwork-preview img")
    expect(picture).to_be_visible()
    page.wait_for_function("() => document.querySelector('.artwork-preview img').complete")
    natural = page.evaluate("document.querySelector('.artwork-preview img').naturalWidth")
    assert natural == 128 and abs(box(page, ".artwork-preview img")["width"] - natural) <= 1
    nothing_hidden_shows(page)
    next_step(preview_url, "#amount")

    # A price below the minimum: the reason and the form again, as a page of its own; Back from
    # the checkout page shows it again without asking to resend anything.
    page.fill("#amount", "0,01" if lang == "es" else "0.01")
    page.click(".checkout button[type=submit]")
    expect(page.locator(".checkout .notice-error")).to_contain_text(text["minimum"])
    expect(page).to_have_url(re.compile(r"/a/[\w-]+\?amount="))
    page.fill("#amount", "12")
    page.click(".checkout button[type=submit]")
    expect(page).to_have_url(re.compile(rf"/{lang}/demo-checkout/demo_\w+"))
    nothing_hidden_shows(page)
    checkout_url = page.url
    expect(page.locator(f"a[href='{preview_url.removeprefix(base)}']")).to_be_visible()  # a way back
    page.go_back()
    expect(page).to_have_url(re.compile(r"/a/[\w-]+\?amount="))
    expect(page.locator("#amount")).to_be_visible()
    page.go_forward()
    expect(page).to_have_url(checkout_url)
    page.locator("form button[type=submit]").click()

    # The receipt: the picture, where the sale stands, and the way on.
    expect(page).to_have_url(re.compile(rf"/{lang}/receipts/[0-9a-f]{{32}}$"))
    receipt_url = page.url
    expect(page.locator("[data-receipt-image]")).to_be_visible()
    expect(page.locator(".receipt .result-actions a").first).to_be_visible()
    nothing_hidden_shows(page)
    next_step(receipt_url, "[data-receipt-image]")
    expect(page.locator("[data-status]")).to_contain_text(text["delivered"], timeout=600_000)
    expect(page.locator(".download-state")).to_contain_text(text["downloads"])
    expect(page.locator(f".receipt a[href='{preview_url.removeprefix(base)}']")).to_be_visible()
    nothing_hidden_shows(page)
    next_step(receipt_url, ".download-state")

    # The preview after paying: it says so and leads to the receipt; no form to pay again.
    page.goto(preview_url)
    expect(page.locator(".purchase h2")).to_have_text(text["paid"])
    expect(page.locator(f".purchase a[href='{receipt_url.removeprefix(base)}']")).to_be_visible()
    assert page.locator("#amount").count() == 0
    nothing_hidden_shows(page)
    next_step(preview_url, ".purchase a[href*='/receipts/']")
    # And the status page leads to the receipt.
    page.goto(status_url)
    expect(page.locator(f"a[href='{receipt_url.removeprefix(base)}']")).to_be_visible()
    nothing_hidden_shows(page)


def test_addresses_people_type_lead_to_a_page(pages: Pages, site: tuple[str, Path]) -> None:
    base, _ = site
    page = pages.open("es", "phone")
    for typed, lands in [("/commission", "/es/commission"), ("/redoc", "/docs"), ("/es/docs", "/es/docs"), ("/es", "/es/")]:
        response = page.goto(base + typed)
        assert response is not None and response.status == 200, typed
        assert page.url == base + lands
        nothing_hidden_shows(page)
    icon = page.goto(base + "/favicon.ico")
    assert icon is not None and icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
