"""The HTML pages without a browser: language negotiation, both languages, forms that work
without JavaScript, scripts only as files, the preview page behind the mailed token."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from atelier.service.context import Services
from atelier.service.worker import Worker
from atelier.store.db import Artwork, transaction
from atelier.web.templating import STATIC_DIR

from tests.service.service_fixtures import install_test_style, microast_painter
from tests.web.web_fixtures import form_token


class Page(HTMLParser):
    """The parts of a page these tests look at."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = False
        self.inline_handlers: list[str] = []
        self.style_attributes: list[str] = []
        self.inputs: list[dict[str, str | None]] = []
        self.labels: set[str] = set()
        self.links: list[str] = []
        self.lang: str | None = None
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "html":
            self.lang = attributes.get("lang")
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
        self.inline_handlers += [name for name in attributes if name.startswith("on")]
        if "style" in attributes:
            self.style_attributes.append(tag)
        if tag in ("input", "select", "textarea"):
            self.inputs.append(attributes)
        if tag == "label" and attributes.get("for"):
            self.labels.add(attributes["for"] or "")
        for name in ("href", "src"):
            if attributes.get(name):
                self.links.append(attributes[name] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True


@pytest.fixture
def commission_client(client: TestClient, services: Services, style_dir: Path) -> TestClient:
    install_test_style(services, style_dir)
    services.painter = microast_painter(services, steps=1)
    return client


@pytest.mark.parametrize(
    ("header", "location"),
    [
        ("es-ES,es;q=0.9,en;q=0.8", "/es/"),
        ("en-GB,en;q=0.9,es;q=0.8", "/en/"),
        ("en;q=0.3, es;q=0.7", "/es/"),
        ("fr-FR,fr;q=0.9", "/en/"),
        (None, "/en/"),
    ],
)
def test_the_root_sends_visitors_to_their_language(client: TestClient, header: str | None, location: str) -> None:
    headers = {"Accept-Language": header} if header else {}
    response = client.get("/", headers=headers, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == location
    assert "accept-language" in response.headers["vary"].lower()


@pytest.mark.parametrize("path", ["/{lang}/", "/{lang}/commission"])
@pytest.mark.parametrize(("lang", "heading"), [("en", "Turn a photo into a painting"), ("es", "Convierte una foto en un cuadro")])
def test_pages_exist_in_both_languages_with_scripts_only_as_files(
    commission_client: TestClient, path: str, lang: str, heading: str
) -> None:
    response = commission_client.get(path.format(lang=lang))
    assert response.status_code == 200
    assert response.headers["content-language"] == lang
    page = Page(response.text)
    assert page.lang == lang
    assert not page.inline_script and not page.inline_handlers and not page.style_attributes
    assert all(s.get("src", "").startswith("/static/") for s in page.scripts)
    # Every form field a person fills has a label (hidden fields need none).
    for field in page.inputs:
        if field.get("type") not in ("hidden", "submit"):
            assert field.get("id") in page.labels or field.get("aria-label"), field
    # Every asset comes from this server.
    assert not [link for link in page.links if link.startswith(("http://", "https://", "//"))]
    if path == "/{lang}/":
        assert heading in response.text


def test_every_static_file_a_page_names_is_served(commission_client: TestClient) -> None:
    for lang in ("en", "es"):
        for path in ("/{}/", "/{}/commission"):
            for link in Page(commission_client.get(path.format(lang)).text).links:
                if link.startswith("/static/"):
                    assert commission_client.get(link).status_code == 200, link
    assert (STATIC_DIR / "js" / "instant.js").is_file()


def test_the_instant_form_works_without_javascript(client: TestClient, photo_bytes: bytes) -> None:
    response = client.post(
        "/es/instant",
        data={"csrf_token": form_token(client), "style": "mosaic", "strength": "80"},
        files={"photo": ("dog.jpg", photo_bytes, "image/jpeg")},
        follow_redirects=False,
    )
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/es/?") and "style=mosaic" in location and "strength=80" in location
    page = client.get(location)
    assert page.status_code == 200
    image = re.search(r'id="result-image" src="([^"]+)"', page.text)
    assert image is not None
    painted = client.get(image.group(1).replace("&amp;", "&"))
    assert painted.status_code == 200 and painted.headers["content-type"] == "image/jpeg"
    before = re.search(r'id="before-image" src="([^"]+)"', page.text)
    assert before is not None and client.get(before.group(1)).status_code == 200


def test_the_instant_form_with_a_broken_file_explains_in_the_page_language_and_keeps_the_last_photo(
    client: TestClient, photo_bytes: bytes
) -> None:
    token = form_token(client)
    good = client.post("/es/instant", data={"csrf_token": token, "style": "candy"}, files={"photo": ("dog.jpg", photo_bytes, "image/jpeg")}, follow_redirects=False)
    photo = re.search(r"photo=(\w+)", good.headers["location"]).group(1)  # type: ignore[union-attr]
    response = client.post(
        "/es/instant",
        data={"csrf_token": token, "style": "mosaic", "content_id": photo},
        files={"photo": ("x.jpg", b"not a picture", "image/jpeg")},
        follow_redirects=False,
    )
    # A redirect to a page (POST-redirect-GET: Back and reload never resend the form) that says
    # why, and still shows the last good photo painted: no bad file name beside an old result.
    assert response.status_code == 303
    assert f"photo={photo}" in response.headers["location"] and "error=unreadable" in response.headers["location"]
    page = client.get(response.headers["location"])
    assert page.status_code == 200
    assert "No hemos podido leer esta imagen" in page.text
    assert re.search(r'id="result-image" src="/api/v1/stylize\?content_id=' + photo, page.text)


def test_the_commission_form_works_without_javascript(
    commission_client: TestClient, services: Services, photo_bytes: bytes
) -> None:
    response = commission_client.post(
        "/en/commission",
        data={"csrf_token": form_token(commission_client), "style": "starry-night", "email": "ana@example.com"},
        files={"photo": ("dog.jpg", photo_bytes, "image/jpeg")},
        follow_redirects=False,
    )
    assert response.status_code == 303
    status_page = commission_client.get(response.headers["location"])
    assert status_page.status_code == 200
    assert "You are next" in status_page.text
    assert 'http-equiv="refresh"' in status_page.text  # without scripts, the page refreshes itself
    assert Worker(services, worker_id="w").run_once() == "done"
    finished = commission_client.get(response.headers["location"])
    assert "We have emailed you the link" in finished.text
    assert 'http-equiv="refresh"' not in finished.text
    # The next step is on the page, not only in the mail: the preview, which shows the picture.
    link = re.search(r'<a class="button primary" data-next-preview href="(/en/a/[\w-]+)"', finished.text)
    assert link is not None
    preview = commission_client.get(link.group(1))
    assert preview.status_code == 200 and "Keep it" in preview.text


def test_a_bounced_commission_keeps_the_photo_and_what_was_typed(commission_client: TestClient, photo_bytes: bytes) -> None:
    response = commission_client.post(
        "/es/commission",
        data={"csrf_token": form_token(commission_client, "/es/commission"), "style": "starry-night", "email": "ana@"},
        files={"photo": ("dog.jpg", photo_bytes, "image/jpeg")},
        follow_redirects=False,
    )
    assert response.status_code == 303  # to a page: Back after it never asks to resend the form
    page = commission_client.get(response.headers["location"])
    assert page.status_code == 200
    assert "Esa dirección de correo no parece correcta" in page.text
    assert 'value="ana@"' in page.text and 'aria-invalid="true"' in page.text
    # The photo is kept: the form offers it again rather than asking for it.
    kept = re.search(r'name="content_id" value="(\w+)"', page.text)
    assert kept is not None and commission_client.get(f"/api/v1/uploads/{kept.group(1)}/image").status_code == 200
    assert "/static/js/strip.js" in page.text


def test_a_commission_form_with_several_mistakes_names_every_one(commission_client: TestClient) -> None:
    response = commission_client.post(
        "/en/commission",
        data={"csrf_token": form_token(commission_client, "/en/commission"), "style": "no-such-style", "email": "not an address"},
        files={"photo": ("x.jpg", b"not a picture", "image/jpeg")},
    )
    assert response.status_code == 200 and response.url.path == "/en/commission"
    problems = re.findall(r"<li>([^<]+)</li>", response.text)
    assert problems == [
        "We could not read this picture. Try a JPEG, PNG or WebP photo.",
        "Please choose one of the hand-picked styles.",
        "That email address does not look right. Please check it.",
    ]


def test_the_preview_page_shows_the_artwork_behind_the_token(
    commission_client: TestClient, services: Services, photo_bytes: bytes
) -> None:
    commission_client.post(
        "/es/commission",
        data={"csrf_token": form_token(commission_client), "style": "starry-night", "email": "ana@example.com"},
        files={"photo": ("dog.jpg", photo_bytes, "image/jpeg")},
    )
    Worker(services, worker_id="w").run_once()
    with transaction(services.engine, read_only=True) as session:
        token = session.scalars(select(Artwork.preview_token)).one()
    page = commission_client.get(f"/es/a/{token}")
    assert page.status_code == 200
    assert "La noche estrellada" in page.text and "Vincent van Gogh" in page.text
    assert f'src="/a/{token}/preview.jpg"' in page.text
    assert page.headers["referrer-policy"] == "no-referrer"  # the token must not leak to other sites
    missing = commission_client.get("/es/a/" + "x" * 32)
    assert missing.status_code == 404 and "Aquí no hay nada" in missing.text


def test_unknown_pages_answer_a_friendly_404(client: TestClient) -> None:
    response = client.get("/fr/")
    assert response.status_code == 404
    assert "Nothing here" in response.text
    assert client.get("/en/artworks/" + "0" * 32).status_code == 404


@pytest.mark.parametrize(
    ("path", "lands_on"),
    [
        ("/commission", "/es/commission"),
        ("/redoc", "/docs"),
        ("/es/docs", "/es/docs"),
        ("/en/docs", "/en/docs"),
        ("/es", "/es/"),
        ("/es/commission/", "/es/commission"),
    ],
)
def test_addresses_people_type_lead_to_a_page(client: TestClient, path: str, lands_on: str) -> None:
    """Each answers 200 or redirects to a page that answers 200 (never to a 404)."""
    response = client.get(path, headers={"Accept-Language": "es-ES,es;q=0.9"})
    assert response.status_code == 200, [r.headers.get("location") for r in response.history]
    assert response.url.path == lands_on
    assert all(300 <= r.status_code < 400 for r in response.history)


def test_the_favicon_is_the_pages_icon(client: TestClient) -> None:
    response = client.get("/favicon.ico", follow_redirects=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.content == (STATIC_DIR / "favicon.svg").read_bytes()


def test_the_api_reference_speaks_the_page_language_and_its_switch_stays_on_it(client: TestClient) -> None:
    page = client.get("/es/docs")
    assert page.headers["content-language"] == "es" and "/api/v1/stylize" in page.text
    assert 'href="/en/docs"' in page.text
    assert 'href="/es/docs"' in client.get("/docs", headers={"Accept-Language": "en"}).text


def test_an_unknown_address_is_the_404_page_itself_not_a_redirect_to_one(client: TestClient) -> None:
    response = client.get("/no-such-page", follow_redirects=False)
    assert response.status_code == 404 and "Nothing here" in response.text


def test_a_commission_page_without_styles_names_the_catalog_s_paintings_still_to_come(client: TestClient) -> None:
    # A server set up offline: no painting downloaded, so nothing to order yet -- but the page
    # says what is coming, in the visitor's language, instead of standing empty.
    page = client.get("/es/commission").text
    assert "Este servidor todavía no tiene estilos elegidos a mano." in page
    assert "Estilos en camino" in page and "La noche estrellada" in page and "Vincent van Gogh, 1889" in page
    assert 'name="style"' not in page  # nothing to choose that cannot be painted


def test_the_commission_page_names_only_the_styles_whose_painting_is_missing(
    commission_client: TestClient, services: Services
) -> None:
    # One style installed, one folder left by an offline `atelier setup` (its file, no painting):
    # that one is named; the shipped styles the operator never asked for are not.
    (services.settings.styles_path / "great_wave").mkdir(parents=True)
    shipped = Path(__file__).resolve().parents[2] / "src" / "atelier" / "catalog" / "great_wave" / "style.toml"
    (services.settings.styles_path / "great_wave" / "style.toml").write_text(shipped.read_text())
    page = commission_client.get("/en/commission").text
    assert 'id="style-starry-night"' in page
    assert "More styles soon" in page and "The Great Wave" in page
    assert "The Kiss" not in page
