"""A progress bar on stderr driven by the engines' :class:`~atelier.art.progress.Progress`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from atelier.art.progress import Progress, ProgressCallback


@contextmanager
def progress_bar(title: str) -> Iterator[ProgressCallback]:
    """Yield a callback that draws each Progress on stderr (quiet when stderr is not a terminal)."""
    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with RichProgress(*columns, console=console, transient=False, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(title, total=None, detail="")

        def report(update: Progress) -> None:
            detail = update.stage
            if update.loss is not None:
                detail += f"  loss {update.loss:.4g}"
            bar.update(task, total=update.total, completed=update.step, detail=detail)

        yield report
