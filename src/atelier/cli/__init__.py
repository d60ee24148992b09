"""The ``atelier`` command line (Typer). One module per command group; this one wires them.

Exit codes: 0 success, 2 a refusal with a one-line message (bad input, missing weights or file),
1 an unexpected failure (with a traceback only under ``--debug``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from atelier import __version__
from atelier.service.errors import REFUSALS
from atelier.extras import MissingExtraError

app = typer.Typer(
    name="atelier",
    help="Turn photos and short videos into artworks with neural style transfer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"atelier {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens, to stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    from atelier.config import SettingsError, get_settings
    from atelier.runtime import set_threads

    try:
        settings = get_settings()
    except SettingsError as exc:
        # A missing ATELIER_ENV_FILE or a bad value: one line naming it, not a traceback.
        raise fail(str(exc)) from None
    set_threads(settings.threads)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line refusal to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def refusals() -> Iterator[None]:
    """Turn the typed refusals of the lower layers into a one-line message and exit code 2."""
    try:
        yield
    except REFUSALS as exc:
        raise fail(str(exc)) from None
    except FileNotFoundError as exc:
        raise fail(f"no such file: {exc.filename or exc}") from None
    except IsADirectoryError as exc:
        raise fail(f"is a folder, not a file: {exc.filename or exc}") from None
    except MissingExtraError as exc:
        raise fail(str(exc)) from None


def _register() -> None:
    # Imported here so each group lives in its own module and `atelier --help` stays quick.
    from atelier.cli import jobs as _jobs  # noqa: F401
    from atelier.cli import models as _models  # noqa: F401
    from atelier.cli import bench as _bench  # noqa: F401
    from atelier.cli import render as _render  # noqa: F401
    from atelier.cli import serve as _serve  # noqa: F401
    from atelier.cli import settings as _settings  # noqa: F401
    from atelier.cli import sheet as _sheet  # noqa: F401
    from atelier.cli import store as _store  # noqa: F401
    from atelier.cli import styles as _styles  # noqa: F401
    from atelier.cli import upscale as _upscale  # noqa: F401


def main() -> None:
    """Console entry point."""
    from atelier.runtime import tune_allocator

    # Before anything allocates: see atelier.runtime for why (1.3-1.8x on these CPUs).
    tune_allocator()
    _register()
    try:
        app()
    except MissingExtraError as exc:  # an optional package a setting or command needs
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
