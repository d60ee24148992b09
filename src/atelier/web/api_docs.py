"""``/docs``: the API reference as a plain page rendered from the OpenAPI schema.

FastAPI's default /docs loads Swagger UI from a CDN and runs an inline script, which the
strict Content-Security-Policy forbids and an offline install cannot reach; this page needs
neither. The machine-readable schema stays at /openapi.json.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from atelier.service import i18n
from atelier.web.templating import render

router = APIRouter(include_in_schema=False)

METHODS = ("get", "post", "put", "patch", "delete")


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not ref:
        return schema
    node: Any = spec
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node  # type: ignore[no-any-return]


def _type(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    if schema.get("enum"):
        return " | ".join(str(v) for v in schema["enum"])
    if schema.get("format") == "binary":
        return "file"
    return str(schema.get("type", "object"))


def endpoints(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The operations of an OpenAPI document, flattened for the page."""
    found = []
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            fields = [
                {"name": p["name"], "where": p["in"], "type": _type(p.get("schema", {})), "required": p.get("required", False), "description": p.get("description") or p.get("schema", {}).get("description", "")}
                for p in operation.get("parameters", [])
            ]
            for media, body in operation.get("requestBody", {}).get("content", {}).items():
                schema = _resolve(body.get("schema", {}), spec)
                required = set(schema.get("required", []))
                for name, prop in schema.get("properties", {}).items():
                    prop = _resolve(prop, spec)
                    fields.append({"name": name, "where": "json" if "json" in media else "form", "type": _type(prop), "required": name in required, "description": prop.get("description", "")})
            found.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "fields": fields,
                    "tag": (operation.get("tags") or ["other"])[0],
                }
            )
    return found


def _docs_page(request: Request, locale: str) -> Response:
    spec = request.app.openapi()
    return render(request, "docs.html", locale, title=spec["info"]["title"], version=spec["info"]["version"], endpoints=endpoints(spec))


@router.get("/docs")
def docs(request: Request) -> Response:
    """The reference, its page around it in the visitor's language."""
    return _docs_page(request, i18n.negotiate(request.headers.get("accept-language")))


@router.get("/{lang}/docs")
def docs_in(request: Request, lang: str) -> Response:
    """The same page under a language's prefix (where the language switch leads). The reference
    itself is in English: it names the API's fields."""
    if lang not in i18n.LOCALES:
        return RedirectResponse("/docs", status_code=308)
    return _docs_page(request, lang)


@router.get("/redoc")
def redoc() -> RedirectResponse:
    """FastAPI's usual address of a second reference viewer: this app has one page for both."""
    return RedirectResponse("/docs", status_code=308)
