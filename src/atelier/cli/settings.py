"""``atelier settings``: the effective settings, secrets masked, with where each value came from."""

from __future__ import annotations

import json

import typer

from atelier.cli.app import app, fail


@app.command("settings")
def settings_command(
    as_json: bool = typer.Option(False, "--json", help="Print the settings as JSON."),
    changed: bool = typer.Option(False, "--changed", help="Only the settings not at their default."),
) -> None:
    """Print every setting's value as this process sees it (the environment, then the
    ATELIER_ENV_FILE file, then the default) and which of them it came from. Secrets and the
    passwords in URLs are masked."""
    from atelier.config import SettingsError
    from atelier.config_report import settings_report

    try:
        report = settings_report()
    except SettingsError as exc:
        raise fail(str(exc)) from None
    values = [v for v in report.values if v.source != "default"] if changed else report.values
    if as_json:
        payload = report.public()
        payload["settings"] = [v.public() for v in values]
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(f"env file: {report.env_file or '(none: ATELIER_ENV_FILE is unset)'}")
    width = max((len(v.variable) for v in values), default=0)
    for value in values:
        shown = value.value if value.value != "" else "(unset)"
        typer.echo(f"{value.variable:<{width}}  {value.source:<8}  {shown}")
    for name in report.unknown_in_file:
        typer.echo(f"warning: {name} in {report.env_file} is not a setting (misspelt?)", err=True)

