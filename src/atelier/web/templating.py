"""Server-rendered pages: Jinja2 with Babel translations, one environment per language.

One environment per language because installing translations changes an environment: sharing
one between requests in different languages would mix them (templates compile once per
language, which costs nothing noticeable for a handful of pages).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
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


def render(request: Request, template: str, locale: str, *, status_code: int = 200, headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """The page ``template`` in ``locale`` with ``context``."""
    env = environment(locale)
    languages = [
        {"code": code, "name": i18n.LANGUAGE_NAMES[code], "href": other_locale_path(request, locale, code), "current": code == locale}
        for code in i18n.LOCALES
    ]
    context.setdefault("active", None)
    from atelier.web import security

    # Every page may hold a form: its CSRF field, and the bot check's widget when one is on.
    context.setdefault("csrf_field", security.csrf_field(request))
    context.setdefault("captcha_widget", security.captcha_widget(request))
    context.setdefault("captcha_script", security.captcha_script(request))
    html = env.get_template(template).render(
        request=request,
        locale=locale,
        languages=languages,
        **context,
    )
    all_headers = {"Content-Language": locale, "Cache-Control": "no-store"}
    all_headers.update(headers or {})
    return HTMLResponse(html, status_code=status_code, headers=all_headers)
