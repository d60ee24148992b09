"""CSRF: every HTML form carries a token bound to the browser's cookie; a POST to a page without
it (or with someone else's) is refused with a page in its language; the JSON API, the payment
webhook and the signed direct uploads are exempt."""

from __future__ import annotations

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from atelier.web.app import create_app
from atelier.web.security import CSRF_COOKIE, csrf_protect
from tests.web.web_fixtures import form_token


def test_a_form_post_without_the_token_is_refused_in_the_page_language(client: TestClient, photo_bytes: bytes) -> None:
    client.get("/es/")  # the browser has its cookie, but the attacker's form has no token
    refused = client.post("/es/instant", data={"style": "candy"}, files={"photo": ("a.jpg", photo_bytes, "image/jpeg")})
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("text/html")
    assert "Este formulario ha caducado" in refused.text


def test_a_token_from_another_browser_is_refused(client: TestClient, services, photo_bytes: bytes) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(services=services, workers=0, mail=False)) as attacker:
        stolen = form_token(attacker)  # valid, but for the attacker's own cookie
    client.get("/en/")
    refused = client.post("/en/commission", data={"csrf_token": stolen, "email": "a@example.com", "style": "x"})
    assert refused.status_code == 403


def test_without_the_cookie_even_a_real_token_is_refused(client: TestClient) -> None:
    token = form_token(client)
    client.cookies.delete(CSRF_COOKIE)
    assert client.post("/en/commission", data={"csrf_token": token, "email": "a@example.com"}).status_code == 403


def test_the_cookie_is_httponly_and_same_site(client: TestClient) -> None:
    page = client.get("/en/commission")
    cookie = page.headers["set-cookie"].lower()
    assert cookie.startswith(CSRF_COOKIE) and "httponly" in cookie and "samesite=lax" in cookie
    # Once set, the next page keeps the same token (several tabs stay valid).
    assert form_token(client, "/en/") == form_token(client, "/es/")


def test_with_the_token_the_form_goes_through(client: TestClient, photo_bytes: bytes) -> None:
    token = form_token(client, "/en/")
    ok = client.post("/en/instant", data={"csrf_token": token, "style": "candy"}, files={"photo": ("a.jpg", photo_bytes, "image/jpeg")}, follow_redirects=False)
    assert ok.status_code == 303


def test_the_json_api_and_the_webhook_are_exempt(client: TestClient, photo_bytes: bytes) -> None:
    assert client.post("/api/v1/uploads", files={"file": ("a.jpg", photo_bytes, "image/jpeg")}).status_code == 201
    webhook = client.post("/api/v1/payments/stripe/webhook", content=b"{}", headers={"Stripe-Signature": "t=1,v1=00"})
    assert webhook.status_code != 403 or webhook.json()["error"]["code"] != "csrf_failed"


def _routes(routes, prefix: str = "", inherited: tuple = ()):  # type: ignore[no-untyped-def]
    """(path, methods, dependency callables) of every API route, through included routers."""
    for item in routes:
        if isinstance(item, APIRoute):
            calls = {d.dependency for d in (*inherited, *item.dependencies)}
            yield prefix + item.path, item.methods, calls
        elif hasattr(item, "original_router"):  # FastAPI's included router
            context = item.include_context
            yield from _routes(item.original_router.routes, prefix + context.prefix, (*inherited, *context.dependencies))


def test_every_html_form_route_is_protected(client: TestClient) -> None:
    # A new POST page route without the check would be a hole: every unsafe route outside the
    # JSON API and /blobs must have the dependency.
    found = list(_routes(client.app.routes))  # type: ignore[attr-defined]
    unsafe = [(path, calls) for path, methods, calls in found if methods & {"POST", "PUT", "PATCH", "DELETE"}]
    pages = [(path, calls) for path, calls in unsafe if not path.startswith(("/api/", "/blobs"))]
    assert {"/{lang}/instant", "/{lang}/commission", "/admin/login"} <= {path for path, _ in pages}
    assert [path for path, calls in pages if csrf_protect not in calls] == []


def test_page_posts_without_a_token_are_all_refused(client: TestClient) -> None:
    client.get("/en/")
    for path in ("/en/instant", "/en/commission", "/admin/login", "/admin/jobs/1/cancel"):
        refused = client.post(path, data={"x": "1"})
        assert refused.status_code == 403, path
