"""The ``atelier`` Typer app itself and what every command uses: :func:`fail` (a one-line
refusal, exit code 2) and :func:`refusals` (the lower layers' typed refusals as such lines).
Command modules import these from here; :mod:`atelier.cli` registers the modules on the app."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from atelier import __version__
from atelier.extras import MissingExtraError
from atelier.service.errors import REFUSALS

#: When the command line started (its modules were imported), for the --json reports' seconds.
STARTED = time.perf_counter()

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
