"""Optional packages: what a bigger deployment adds to the base install, and the one line that
says how to get one that is missing.

The base install (``pip install atelier``) runs the product on its embedded default: the command
line, ``atelier serve`` on SQLite and a local folder, video. The extras add PostgreSQL, S3,
Stripe, GeoIP and the HTTP benchmarks. Every place that imports an optional package goes through
:func:`need`, so a missing one is a :class:`MissingExtraError` whose message names the
``pip install 'atelier[EXTRA]'`` that fixes it, never a ``ModuleNotFoundError`` traceback; the
command line prints it as one line (exit code 2) and the server checks what its settings use
before it starts (:func:`missing_for`).

A leaf module: it imports nothing of Atelier's, so ``store`` and ``service`` can both use it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atelier.config import Settings


@dataclass(frozen=True)
class Extra:
    """One optional package: the extra that installs it and what it is for (in words)."""

    package: str  # the module to import
    extra: str  # the name in ``pip install 'atelier[...]'``
    feature: str  # what needs it, for the message


#: The optional packages, by module name.
EXTRAS: dict[str, Extra] = {
    "psycopg": Extra("psycopg", "postgres", "PostgreSQL (ATELIER_DATABASE_URL=postgresql://...)"),
    "boto3": Extra("boto3", "s3", "S3 storage (ATELIER_STORAGE_URL=s3://...)"),
    "botocore": Extra("botocore", "s3", "S3 storage (ATELIER_STORAGE_URL=s3://...)"),
    "stripe": Extra("stripe", "payments", "Stripe payments (ATELIER_STRIPE_SECRET_KEY)"),
    "geoip2": Extra("geoip2", "geoip", "GeoIP countries (ATELIER_GEOIP_DATABASE)"),
    "httpx": Extra("httpx", "bench", "the HTTP benchmarks"),
}


class MissingExtraError(ImportError):
    """An optional package that is not installed; the message is one line naming the extra."""

    def __init__(self, extras: list[Extra]) -> None:
        names = sorted({e.extra for e in extras})
        features = "; ".join(dict.fromkeys(e.feature for e in extras))
        packages = ", ".join(dict.fromkeys(e.package for e in extras))
        super().__init__(
            f"{features} needs {packages}, which is not installed: pip install 'atelier[{','.join(names)}]'"
        )
        self.extras = extras


def need(module: str) -> ModuleType:
    """Import the optional ``module`` (``"boto3"``, ``"botocore.config"``...), or raise
    :class:`MissingExtraError` naming the extra that installs it."""
    top = module.split(".")[0]
    extra = EXTRAS[top]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise  # the package is there but something it needs is broken: that traceback helps
        raise MissingExtraError([extra]) from None


def installed(module: str) -> bool:
    """Whether the optional ``module`` can be imported (looked up, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def used_by(settings: Settings) -> list[Extra]:
    """The optional packages that ``settings`` ask for."""
    wanted = []
    if settings.database_url and settings.database_url.split(":", 1)[0].startswith("postgresql"):
        wanted.append(EXTRAS["psycopg"])
    if settings.storage_url and settings.storage_url.startswith("s3:"):
        wanted.append(EXTRAS["boto3"])
    if settings.stripe_secret_key:
        wanted.append(EXTRAS["stripe"])
    if settings.geoip_database:
        wanted.append(EXTRAS["geoip2"])
    return wanted


def missing_for(settings: Settings) -> MissingExtraError | None:
    """The error to refuse a start with when ``settings`` ask for a package that is missing."""
    missing = [extra for extra in used_by(settings) if not installed(extra.package)]
    return MissingExtraError(missing) if missing else None
