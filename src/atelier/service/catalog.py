"""The styles a user can pick, as the pages and the API show them: the filters (one network per
painting) and the hand-picked catalog styles (a painting, usable instantly with MicroAST/AdaIN,
and for commissions when the style has a painting recipe).

Names are shown in the user's language. Thumbnails: a catalog style's thumbnail is its painting;
a filter has no painting in the package, so its thumbnail is the filter applied to a small scene
drawn here (sky, sun, hills, water), which shows what the filter does to a photo.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image, ImageDraw, ImageFilter

from atelier.art.engines.filters import FILTERS
from atelier.art.blocks.images import encode_image
from atelier.service import i18n

if TYPE_CHECKING:
    from atelier.install.styles import Style

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 192

# Filter names as people would say them (translated through the catalog).
_FILTER_TITLES = {
    "candy": i18n.lazy("Candy"),
    "mosaic": i18n.lazy("Mosaic"),
    "rain_princess": i18n.lazy("Rain Princess"),
    "udnie": i18n.lazy("Udnie"),
    "pointilism": i18n.lazy("Pointillism"),
}
_FILTER_ARTISTS = {
    "candy": None,
    "mosaic": None,
    "rain_princess": "Leonid Afremov",
    "udnie": "Francis Picabia",
    "pointilism": None,
}


@dataclass(frozen=True)
class StyleEntry:
    """One style as offered to users.

    ``name`` is what the API takes (``style_name``); ``kind`` is ``filter`` (a fixed-style
    network) or ``painting`` (an image any instant engine can paint with); ``commission`` says
    whether it can be ordered as a commission (it has a painting recipe).
    """

    name: str
    kind: Literal["filter", "painting"]
    titles: dict[str, str]
    artist: str | None = None
    image_path: Path | None = None
    thumbnail_path: Path | None = None
    commission: bool = False
    source: Any = field(default=None, compare=False, repr=False)  # the catalog's own object

    def title(self, locale: str) -> str:
        """The style's name in ``locale``."""
        locale = i18n.normalize(locale)
        if locale in self.titles:
            return self.titles[locale]
        if self.kind == "filter":
            return i18n.gettext(locale, self.titles.get("en", self.name))
        return self.titles.get("en") or self.name

    def load_image(self) -> Image.Image:
        """The painting (RGB), for the instant engines."""
        if self.image_path is None:
            raise FileNotFoundError(f"style {self.name!r} has no painting")
        with Image.open(self.image_path) as image:
            return image.convert("RGB")


def _filter_entries() -> list[StyleEntry]:
    return [
        StyleEntry(name=name, kind="filter", titles={"en": _FILTER_TITLES.get(name, name)}, artist=_FILTER_ARTISTS.get(name))
        for name in FILTERS
    ]


def _catalog_entries(styles_dir: Path) -> list[StyleEntry]:
    """The hand-picked styles whose painting is installed (atelier.install.styles)."""
    from atelier.install.styles import load_catalog

    return [entry_of_catalog_style(style) for style in load_catalog(styles_dir)]


def entry_of_catalog_style(style: Style) -> StyleEntry:
    """A StyleEntry for a style of the catalog: usable instantly with its painting, and for
    commissions when it paints with a recipe (the Gatys engine)."""
    return StyleEntry(
        name=style.name,
        kind="painting",
        titles=dict(style.titles),
        artist=style.artist,
        image_path=style.image_path,
        thumbnail_path=style.thumbnail_path if style.thumbnail_path.is_file() else None,
        commission=style.engine == "gatys" and style.recipe is not None,
        source=style,
    )


class Catalog:
    """Filters first, then the catalog's paintings. Reloaded with :meth:`reload`."""

    def __init__(
        self,
        styles_dir: Path,
        *,
        models_dir: Path | None = None,
        entries: list[StyleEntry] | None = None,
    ) -> None:
        self.styles_dir = styles_dir
        self.models_dir = models_dir
        self._lock = threading.Lock()
        self._entries: list[StyleEntry] | None = entries
        self._thumbs: dict[str, bytes] = {}

    def reload(self) -> None:
        with self._lock:
            self._entries = None
            self._thumbs.clear()

    def entries(self) -> list[StyleEntry]:
        with self._lock:
            if self._entries is None:
                self._entries = _filter_entries() + _catalog_entries(self.styles_dir)
            return list(self._entries)

    def get(self, name: str) -> StyleEntry | None:
        key = name.strip().lower()
        for entry in self.entries():
            if entry.name == key:
                return entry
        # Filters answer to the spellings atelier render takes (rain-princess, filter-candy).
        from atelier.service.engines import filter_name

        canonical = filter_name(key)
        if canonical is not None:
            for entry in self.entries():
                if entry.kind == "filter" and entry.name == canonical:
                    return entry
        return None

    def filters(self, *, installed: bool = False) -> list[StyleEntry]:
        """The filters; with ``installed``, only those whose weights are in the models folder
        (what the pages offer: a machine set up offline serves the filters it has)."""
        found = [e for e in self.entries() if e.kind == "filter"]
        if installed and self.models_dir is not None:
            from atelier.install import models

            found = [e for e in found if not models.status(f"filter-{e.name}", models_dir=self.models_dir).missing]
        return found

    def paintings(self) -> list[StyleEntry]:
        return [e for e in self.entries() if e.kind == "painting"]

    def commissionable(self) -> list[StyleEntry]:
        return [e for e in self.entries() if e.commission]

    def awaiting(self) -> list[Style]:
        """Catalog styles whose painting is not on this machine yet, by name: the commission
        page names them, so a server set up offline does not look empty. Those are the style
        folders whose painting is missing (`atelier setup` writes a style's file before it
        fetches the painting) and, while no style can be commissioned at all, the shipped
        catalog's; an operator who keeps only styles of their own is not shown the others."""
        from atelier.install.styles import load_catalog, shipped_styles

        installed = {e.name for e in self.entries() if e.kind == "painting"}
        found = {} if self.commissionable() else {s.name: s for s in shipped_styles()}
        found |= {s.name: s for s in load_catalog(self.styles_dir, include_missing=True)}
        return [found[name] for name in sorted(found) if name not in installed and not found[name].installed]

    def thumbnail(self, name: str, *, paint_filter: Callable[[Image.Image, str], Image.Image]) -> bytes:
        """A JPEG thumbnail of the style, made once. ``paint_filter(scene, name)`` paints the
        scene with a filter (the caller owns the engines)."""
        entry = self.get(name)
        if entry is None:
            raise KeyError(name)
        with self._lock:
            cached = self._thumbs.get(entry.name)
        if cached is not None:
            return cached
        if entry.kind == "filter":
            image = paint_filter(scene(), entry.name)
        elif entry.thumbnail_path is not None:
            with Image.open(entry.thumbnail_path) as made:
                image = _cover(made.convert("RGB"), THUMBNAIL_SIZE)
        else:
            image = _cover(entry.load_image(), THUMBNAIL_SIZE)
        data = encode_image(image, format="JPEG", quality=85)
        with self._lock:
            self._thumbs[entry.name] = data
        return data


def _cover(image: Image.Image, size: int) -> Image.Image:
    """A square crop of the middle of ``image``, ``size`` pixels wide."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def scene(size: int = THUMBNAIL_SIZE) -> Image.Image:
    """A small landscape drawn from shapes: what the filter thumbnails are painted from.

    Filters respond to edges, flat areas and colour; a sky gradient, a sun, two hills, a lake and
    a tree give them all of these, so every thumbnail shows its filter's character.
    """
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    horizon = int(size * 0.62)
    for y in range(horizon):  # sky: deep blue to a warm haze near the horizon
        t = y / horizon
        draw.line([(0, y), (size, y)], fill=(int(40 + 190 * t), int(90 + 120 * t), int(190 + 40 * t)))
    draw.ellipse([size * 0.62, size * 0.12, size * 0.84, size * 0.34], fill=(255, 214, 102))
    draw.polygon([(0, horizon), (size * 0.35, size * 0.40), (size * 0.75, horizon)], fill=(88, 112, 150))
    draw.polygon([(size * 0.3, horizon), (size * 0.7, size * 0.47), (size, size * 0.58), (size, horizon)], fill=(64, 130, 92))
    for y in range(horizon, size):  # water, darker towards the viewer
        t = (y - horizon) / (size - horizon)
        draw.line([(0, y), (size, y)], fill=(int(60 - 30 * t), int(120 - 40 * t), int(170 - 50 * t)))
    trunk_x = int(size * 0.18)
    draw.rectangle([trunk_x - 3, int(size * 0.48), trunk_x + 3, int(size * 0.66)], fill=(92, 60, 38))
    draw.ellipse([trunk_x - 22, int(size * 0.28), trunk_x + 22, int(size * 0.54)], fill=(46, 104, 52))
    return image.filter(ImageFilter.GaussianBlur(0.6))
