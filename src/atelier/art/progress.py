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


#: Stages that follow a painting's passes (atelier.service.painting's postprocess).
AFTER_PASSES = ("finish", "upscale", "done")


class ProgressMeter:
    """One fraction for a whole piece of work from an engine's stream of :class:`Progress`,
    that never goes down.

    A Gatys painting reports each pass from 1 to its own number of iterations, so its
    ``fraction`` runs 0 -> 1 once per pass (12 -> 29 -> 96 -> 36 ... on a progress bar). When
    the reports carry the whole plan (``extra["plan"]``: ``(width, height, iterations)`` of
    every pass, as :func:`atelier.art.engines.gatys.paint` sends it) and the pass
    (``extra["pass"]``, from 1), the meter weights each pass by its pixels x iterations -- what
    an iteration costs grows with the pixels -- and the passes fill ``1 - tail`` of the range;
    the stages after them (:data:`AFTER_PASSES`, or any other once the passes have been seen)
    fill the last ``tail``. Reports of any other engine count as their own ``fraction``.
    """

    def __init__(self, *, tail: float = 0.0) -> None:
        if not 0.0 <= tail < 1.0:
            raise ValueError("tail must be in [0, 1)")
        self.tail = tail
        self.value = 0.0
        #: Pixels x iterations of the whole plan (0 until a plan was seen).
        self.work = 0.0
        #: The number of passes of the plan (0 until a plan was seen).
        self.passes = 0
        self._weights: list[float] = []

    def __call__(self, p: Progress) -> float:
        extra = p.extra or {}
        plan = extra.get("plan")
        if plan and not self._weights:
            self._weights = [float(w) * float(h) * max(1, int(n)) for w, h, n in plan]
            self.work = sum(self._weights)
            self.passes = len(self._weights)
        number = extra.get("pass")
        if self._weights and number is not None and 1 <= int(number) <= len(self._weights):
            index = int(number) - 1
            done = sum(self._weights[:index]) + self._weights[index] * p.fraction
            fraction = (1.0 - self.tail) * done / self.work
        elif self._weights or p.stage in AFTER_PASSES:
            fraction = (1.0 - self.tail) + self.tail * p.fraction
        else:
            fraction = p.fraction
        self.value = max(self.value, min(1.0, fraction))
        return self.value


class Eta:
    """Seconds left of a piece of work, from how fast its fraction grows; better as it goes.

    The rate is measured over the last ``window`` seconds (all of it until then): what the work
    does now says more of what is left than its start did (a painting's first, small passes
    cost more per pixel than its weights say, and a busy machine gets busier or quieter).
    Until the fraction has grown by ``settle`` (or when it cannot tell yet), the estimate leans
    on ``prior`` (how long the whole work took last times, if known), the share of each moving
    with the fraction gained. Time given to something else (:meth:`skip`: a pause for another
    job) is not counted. ``clock`` is for tests.
    """

    def __init__(
        self,
        *,
        prior: float | None = None,
        settle: float = 0.15,
        window: float = 30.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.prior = prior
        self.settle = settle
        self.window = window
        self.clock = clock or time.monotonic
        self._start: float | None = None
        #: (time, fraction) of the reports, times shifted past any skipped stretch.
        self._samples: list[tuple[float, float]] = []

    def skip(self, seconds: float) -> None:
        """Leave the last ``seconds`` (spent on something else) out of the rate."""
        seconds = max(0.0, seconds)
        self._samples = [(t + seconds, f) for t, f in self._samples]

    def update(self, fraction: float) -> float | None:
        """The seconds left at ``fraction`` (0..1) done, or None when nothing can be said."""
        now = self.clock()
        fraction = min(1.0, max(0.0, fraction))
        if self._start is None:
            self._start = fraction
        # Keep the samples of the window, and the last one before it (the window's start).
        self._samples.append((now, fraction))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.pop(0)
        then, before = self._samples[0]
        gained, elapsed = fraction - before, now - then
        left = 1.0 - fraction
        measured = left * elapsed / gained if gained > 1e-6 and elapsed > 0 else None
        from_prior = None
        if self.prior is not None:
            from_prior = max(0.0, self.prior * left)
        if measured is None:
            return from_prior
        if from_prior is None:
            return measured
        progressed = fraction - self._start
        trust = min(1.0, progressed / self.settle) if self.settle > 0 else 1.0
        return trust * measured + (1.0 - trust) * from_prior
