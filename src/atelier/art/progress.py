"""The one way progress leaves an engine: a callback that receives a :class:`Progress`.

The CLI turns it into a progress bar, the worker into job progress, the web page into SSE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True, slots=True)
class Progress:
    """A step of some long work.

    ``stage`` names the work (``"encode"``, ``"pass 2/3"``, ``"frames"``...), ``step`` counts
    from 1 to ``total``. ``loss`` is set by optimising engines; ``preview`` is an intermediate
    picture when the engine was asked for one; ``extra`` carries engine-specific figures.
    """

    stage: str
    step: int
    total: int
    loss: float | None = None
    preview: Image | None = None
    extra: dict[str, Any] | None = None

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.step / self.total)


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """The default callback: ignore progress."""
