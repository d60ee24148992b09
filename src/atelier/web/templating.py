"""Server-rendered pages: Jinja2 with Babel translations, one environment per language.

One environment per language because installing translations changes an environment: sharing
one between requests in different languages would mix them (templates compile once per
language, which costs nothing noticeable for a handful of pages).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from atelier import __version__
from atelier.service import i18n

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"


@cache
def environment(locale: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.install_gettext_translations(i18n.translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.globals["static"] = static_url
    env.globals["version"] = __version__
    return env


@cache
def _static_stamp(path: str) -> str:
    # The file's modification time busts browser caches when a deploy changes it.
    try:
        return str(int((STATIC_DIR / path).stat().st_mtime))
    except OSError:
        return __version__


def static_url(path: str) -> str:
    return f"/static/{path}?v={_static_stamp(path)}"


def other_locale_path(request: Request, locale: str, other: str) -> str:
    """The same page in another language (the path's first segment swapped; /docs, which has no
    language in its path, has its twin under /{lang}/docs; other pages without one lead home)."""
    path = request.url.path
    prefix = f"/{locale}/"
    rest = path[len(prefix):] if path.startswith(prefix) else ("docs" if path == "/docs" else "")
    query = f"?{request.url.query}" if request.url.query else ""
    return f"/{other}/{rest}{query}"


#: The app-state attribute that holds the page-context providers.
PAGE_CONTEXT = "page_context"


def add_page_context(app: FastAPI, provide: Callable[[Request], dict[str, Any]]) -> None:
    """Give every page rendered by ``app`` what ``provide(request)`` returns (names the page's
    own context does not set). The security layer adds a form's CSRF field and the bot check's
    widget this way, so rendering needs nothing of it (and it can render its refusal pages)."""
    providers = getattr(app.state, PAGE_CONTEXT, None)
    if providers is None:
        providers = []
        setattr(app.state, PAGE_CONTEXT, providers)
    providers.append(provide)


def render(request: Request, template: str, locale: str, *, status_code: int = 200, headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """The page ``template`` in ``locale`` with ``context``."""
    env = environment(locale)
    languages = [
        {"code": code, "name": i18n.LANGUAGE_NAMES[code], "href": other_locale_path(request, locale, code), "current": code == locale}
        for code in i18n.LOCALES
    ]
    context.setdefault("active", None)
    # What other parts give every page (the security layer: a form's CSRF field, the bot
    # check's widget), registered on the app by add_page_context.
    for provide in getattr(request.app.state, PAGE_CONTEXT, ()):
        for key, value in provide(request).items():
            context.setdefault(key, value)
    html = env.get_template(template).render(
        request=request,
        locale=locale,
        languages=languages,
        **context,
    )
    all_headers = {"Content-Language": locale, "Cache-Control": "no-store"}
    all_headers.update(headers or {})
    return HTMLResponse(html, status_code=status_code, headers=all_headers)
