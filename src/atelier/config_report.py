"""The effective settings, each with where its value came from and secrets masked: what
``atelier settings`` prints, so that an operator can check a staging or production host before
starting it ("is this really the PostgreSQL URL from the .env file, or my shell's?").

The sources are asked the same way the settings object asks them (pydantic-settings' own
environment and dotenv sources), so the report cannot disagree with what the product runs on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic_settings import DotEnvSettingsSource, EnvSettingsSource

from atelier.config import ENV_FILE_VARIABLE, Settings, env_file_of, load_settings

Source = Literal["env", "env file", "default"]

#: What a masked secret shows instead of its value.
MASK = "********"

# user:password@ in a URL (database, SMTP): the password is masked, the rest kept.
_URL_PASSWORD = re.compile(r"^(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*:)(?P<password>[^/@]*)(?P<tail>@.*)$")


@dataclass(frozen=True)
class SettingValue:
    """One setting as the product sees it."""

    name: str  # the field, e.g. database_url
    variable: str  # ATELIER_DATABASE_URL
    value: str  # shown form: secrets masked, URL passwords masked, unset as ""
    source: Source
    secret: bool
    description: str

    def public(self) -> dict[str, Any]:
        return {
            "variable": self.variable,
            "value": self.value,
            "source": self.source,
            "secret": self.secret,
        }


@dataclass(frozen=True)
class SettingsReport:
    """Every setting, the file read (if any) and names in that file that are no setting."""

    values: list[SettingValue]
    env_file: Path | None
    unknown_in_file: list[str]

    def public(self) -> dict[str, Any]:
        return {
            "env_file": str(self.env_file) if self.env_file else None,
            "settings": [v.public() for v in self.values],
            "unknown_in_env_file": self.unknown_in_file,
        }


def is_secret(name: str) -> bool:
    """Whether the field ``name`` holds a secret (marked on the field itself)."""
    extra = Settings.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("secret"))


def mask_url(value: str) -> str:
    """``scheme://user:password@host/...`` with the password masked; other text unchanged."""
    match = _URL_PASSWORD.match(value)
    if not match or not match.group("password"):
        return value
    return f"{match.group('head')}{MASK}{match.group('tail')}"


def _shown(value: Any, *, secret: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple | list):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if secret and text:
        return MASK
    return mask_url(text)


def settings_report(env_file: Path | None = None, *, environ: Mapping[str, str] | None = None) -> SettingsReport:
    """The effective settings (as :func:`atelier.config.load_settings` builds them) with the
    source of each value. ``environ`` is only used to find ATELIER_ENV_FILE (tests)."""
    path = env_file if env_file is not None else env_file_of(environ)
    settings = load_settings(path)
    from_env = set(EnvSettingsSource(Settings)().keys())
    from_file: set[str] = set()
    unknown: list[str] = []
    if path is not None:
        source = DotEnvSettingsSource(Settings, env_file=path, env_file_encoding="utf-8")
        found = source()
        from_file = {key for key in found if key in Settings.model_fields}
        prefix = Settings.model_config.get("env_prefix", "").lower()
        # A misspelt name in the file (ATELIER_DATABSE_URL) would be silently ignored: name it.
        unknown = sorted(
            name.upper()
            for name in source.env_vars
            if name.startswith(prefix) and name[len(prefix):] not in Settings.model_fields and name.upper() != ENV_FILE_VARIABLE
        )
    values = []
    for name, field in Settings.model_fields.items():
        secret = is_secret(name)
        where: Source = "env" if name in from_env else "env file" if name in from_file else "default"
        values.append(
            SettingValue(
                name=name,
                variable=f"ATELIER_{name.upper()}",
                value=_shown(getattr(settings, name), secret=secret),
                source=where,
                secret=secret,
                description=field.description or "",
            )
        )
    return SettingsReport(values=values, env_file=path, unknown_in_file=unknown)
