"""The ``atelier`` command line (Typer). One module per command group; this one wires them.

Exit codes: 0 success, 2 a refusal with a one-line message (bad input, missing weights or file),
1 an unexpected failure (with a traceback only under ``--debug``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from atelier import __version__
from atelier.service.errors import REFUSALS
from atelier.extras import MissingExtraError

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


#: The command modules, each registering its commands on ``app`` when imported.
COMMAND_MODULES: tuple[str, ...] = (
    "jobs", "models", "bench", "render", "serve", "settings", "sheet", "store", "styles", "upscale",
)
#: Which modules a top-level command needs (``bench queue`` lives in store.py). A command not
#: listed here loads every module, so a new command works before it is added.
_MODULES_OF: dict[str, tuple[str, ...]] = {
    "render": ("render",),
    "sheet": ("sheet",),
    "upscale": ("upscale",),
    "serve": ("serve",),
    "worker": ("serve",),
    "models": ("models",),
    "styles": ("styles",),
    "settings": ("settings",),
    "jobs": ("jobs",),
    "db": ("store",),
    "reconcile": ("store",),
    "bench": ("bench", "store"),
}


def _register(command: str | None = None) -> None:
    """Import the command modules (all of them, or the ones ``command`` needs).

    The one-off commands pay only for their own imports: ``atelier render`` never imports the
    web app or the database layer (SQLAlchemy alone is a few hundred milliseconds), which is
    most of what a command line spends before the painting starts, beside torch.
    """
    import importlib

    for name in _MODULES_OF.get(command or "", COMMAND_MODULES):
        importlib.import_module(f"atelier.cli.{name}")


def _command_of(argv: list[str]) -> str | None:
    """The top-level command in ``argv`` (the first word that is not an option), if any."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word
    return None


def main() -> None:
    """Console entry point."""
    from atelier.runtime import tune_allocator

    # Before anything allocates: see atelier.runtime for why (1.3-1.8x on these CPUs).
    tune_allocator()
    _register(_command_of(sys.argv[1:]))
    try:
        app()
    except MissingExtraError as exc:  # an optional package a setting or command needs
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
