"""Progress bars on stderr driven by the engines' :class:`~atelier.art.progress.Progress`: one for
paintings (steps), one for downloads (bytes, speed, time left)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
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


@contextmanager
def download_bar() -> Iterator[ProgressCallback]:
    """One bar per file on stderr (silent when stderr is not a terminal)."""
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with RichProgress(*columns, console=console, disable=not sys.stderr.isatty()) as bar:
        tasks: dict[str, TaskID] = {}

        def report(update: Progress) -> None:
            task = tasks.get(update.stage)
            if task is None:
                task = tasks[update.stage] = bar.add_task(update.stage, total=update.total or None)
            bar.update(task, completed=update.step, total=update.total or None)

        yield report
