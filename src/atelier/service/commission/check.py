"""The check before a commission is delivered (issue 15): did the painting converge?

The optimiser can stall (before the line search, the portrait of issue 15 came out an almost
unpainted photo), and nothing else stands between a stalled painting and the buyer. Two
numbers decide, both cheap next to the painting (one VGG forward of three small pictures):

* the **style fall** of the first pass that starts from the photo: how much of its starting
  style loss it removed (measured: 98.6-99.1 % on the 384 px previews, 88 % on a 12-iteration
  test recipe; the stalled portrait 5 % after 30 iterations, 38 % after 150);
* the **style distance** of the painting (:func:`atelier.art.quality.measure_distances`: 1 is
  the photo, 0 the painting's statistics; measured: converged commissions 0.04-0.26 over six
  paintings and four photos at 256 px, a 4-iteration painting 1.10, the issue's stalled
  portrait 0.69; MicroAST 0.04-0.95, docs/QUALITY.md).

A painting that fails is painted again from another start (seeded noise); one that fails again
is not delivered (:class:`NotPaintedError`: the job fails for good and the operator sees why in
/admin). Every check's figures go to the log and into the job's result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from atelier.service.errors import PermanentJobError

if TYPE_CHECKING:
    from atelier.art.blocks.vgg import VGGEncoder
    from atelier.art.engines.gatys import PassRecord

log = logging.getLogger(__name__)

#: The size the distances are measured at (at most; a smaller painting at its own size).
MEASURE_SIZE = 256


class NotPaintedError(PermanentJobError):
    """A painting that did not converge, from two starts: not delivered."""


@dataclass(frozen=True)
class Check:
    """One painting's figures and the verdict."""

    style_distance: float
    content_distance: float
    #: The fraction of its starting style loss that the first pass from the photo removed
    #: (None when no pass started from the photo, e.g. the HD painted on from the preview).
    style_fall: float | None
    #: Empty when the painting passed; else why not, in words for the operator.
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "style_distance": round(self.style_distance, 4),
            "content_distance": round(self.content_distance, 4),
            "passed": self.passed,
        }
        if self.style_fall is not None:
            out["style_fall"] = round(self.style_fall, 4)
        if self.failures:
            out["failures"] = list(self.failures)
        return out


def style_fall(passes: Sequence[PassRecord]) -> float | None:
    """How much of its first style loss the first pass removed (0..1), or None without passes."""
    if not passes or not passes[0].style_losses:
        return None
    first = passes[0].style_losses[0]
    if not (math.isfinite(first) and first > 0):
        return None
    return max(0.0, 1.0 - min(passes[0].style_losses) / first)


def check_painting(
    painted: Image.Image,
    *,
    photo: Image.Image,
    painting: Image.Image,
    encoder: VGGEncoder,
    passes: Sequence[PassRecord] = (),
    from_photo: bool = True,
    max_style_distance: float,
    min_style_fall: float,
) -> Check:
    """Measure ``painted`` (before finishing) against ``photo`` and the style's ``painting``.

    ``passes`` are the painting's records; their first one's fall is checked only when it
    started from the photo (``from_photo``)."""
    from atelier.art.quality import measure_distances

    size = max(32, min(MEASURE_SIZE, max(painted.size)))
    distances = measure_distances(painted, photo=photo, painting=painting, encoder=encoder, size=size)
    fall = style_fall(passes) if from_photo else None
    failures = []
    if not distances.style <= max_style_distance:  # NaN fails too
        failures.append(f"style distance {distances.style:.3f} is above {max_style_distance:g}")
    if fall is not None and fall < min_style_fall:
        failures.append(f"the first pass removed {fall:.0%} of its style loss, less than {min_style_fall:.0%}")
    return Check(distances.style, distances.content, fall, tuple(failures))
