"""The ``atelier`` command line (Typer). One module per command group; this one registers them
(the app itself, ``fail`` and ``refusals`` are in :mod:`atelier.cli.app`, which the command
modules import).

Exit codes: 0 success, 2 a refusal with a one-line message (bad input, missing weights or file),
1 an unexpected failure (with a traceback only under ``--debug``).
"""

from __future__ import annotations

import sys

import typer

from atelier.cli.app import STARTED, app, fail, refusals
from atelier.extras import MissingExtraError

__all__ = ["STARTED", "app", "fail", "main", "refusals"]


#: The command modules, each registering its commands on ``app`` when imported.
COMMAND_MODULES: tuple[str, ...] = (
    "jobs", "models", "bench", "render", "serve", "settings", "setup", "sheet", "store", "styles", "upscale",
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
    "setup": ("setup",),
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
    command = _command_of(sys.argv[1:])
    _register(command)
    try:
        try:
            app()
        except MissingExtraError as exc:  # an optional package a setting or command needs
            typer.echo(f"error: {exc}", err=True)
            raise SystemExit(2) from None
    except SystemExit as done:
        if command not in QUICK_EXIT or "torch" not in sys.modules:
            raise
        _exit_now(done.code)


#: One-off commands that end with :func:`_exit_now` once torch is loaded.
QUICK_EXIT = frozenset({"render", "sheet", "upscale"})


def _exit_now(code: object) -> None:
    """End the process without tearing the interpreter down: with torch imported, Python's own
    shutdown (module teardown, collecting torch's objects) takes 0.6-0.7 s here, a sixth of a
    one-off render. What a normal exit does that matters still happens: the atexit handlers
    (temporary folders, weakref finalizers), logging's flush, stdout and stderr flushed. The
    commands in QUICK_EXIT write their files whole and closed before they return."""
    import atexit
    import logging
    import os

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1, as Python does
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe
            pass
    os._exit(status)
