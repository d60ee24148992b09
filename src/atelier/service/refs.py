"""What the instant service paints, by reference: a photo and a style known by a key (for the
caches) and loaded only when nothing is cached for them. :mod:`atelier.service.resolve` makes
them from uploads and catalog names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from atelier.service.errors import StyleChoiceError


@dataclass(frozen=True)
class PhotoRef:
    """A photo to paint: ``key`` is the sha256 of its file, ``width`` x ``height`` its decoded
    size, ``load`` decodes it (called only when the cache has nothing for it)."""

    key: str
    width: int
    height: int
    load: Callable[[], Image.Image]


@dataclass(frozen=True)
class StyleRef:
    """A style: a filter (``filter`` set), or a painting known by ``key`` (``name:<catalog
    name>`` or ``sha256:<hash of the uploaded file>``) and loaded by ``load`` when not cached."""

    key: str
    filter: str | None = None
    load: Callable[[], Image.Image] | None = None
    #: A blend (:meth:`blended`): the paintings mixed and their shares, summing to 1.
    parts: tuple[StyleRef, ...] = ()
    weights: tuple[float, ...] = ()

    @classmethod
    def of_filter(cls, name: str) -> StyleRef:
        return cls(key=f"filter:{name}", filter=name)

    @classmethod
    def blended(cls, first: StyleRef, second: StyleRef, share: float) -> StyleRef:
        """``first`` and ``second`` mixed, ``share`` (0..1) of the second: MicroAST and AdaIN
        interpolate the two styles' statistics (their ``style_weights``). Only paintings blend:
        a filter is a network of its own, with no statistics to mix."""
        if first.filter is not None or second.filter is not None or first.parts or second.parts:
            raise StyleChoiceError("only two paintings can be blended (the filters are networks of their own)")
        if not 0.0 <= share <= 1.0:
            raise StyleChoiceError(f"the blend (the second style's share) must be between 0 and 1, got {share}")
        if share == 0.0 or first.key == second.key:
            return first
        if share == 1.0:
            return second
        return cls(
            key=f"blend:{first.key}|{second.key}|{share:.3f}",
            load=first.load,
            parts=(first, second),
            weights=(1.0 - share, share),
        )
