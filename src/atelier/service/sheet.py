"""Every style on one photo: a sheet of small previews to choose from, painted in one batch.

``paint_sheet`` paints a photo, scaled to a small size (256 px on its longest side by default),
with every filter and every installed catalog style:

* the **filters** are separate networks (one per painting), so each is one call on the photo;
* the **catalog styles** are painted on the instant path -- MicroAST with the style's painting
  (scaled to the instant service's style size), as :class:`atelier.service.instant.InstantService`
  paints a catalog style -- but all of them in *one* decoder call: the photo is encoded once,
  repeated along the batch, and each row of the batch gets its own style's signals (the engines
  take style signals per photo of a batch, as their colour-preserving path does).

It returns the tiles (picture, name, title in the asked language, kind) and the composed,
labelled sheet image; styles that cannot be painted here (weights or painting missing) are listed
apart with the reason, so a sheet on a machine without some weights shows what does work.

Encoded styles can be shared with the instant service's style cache (``style_cache=``; the keys
are the service's own), so a sheet after some instant paintings encodes no style twice.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from PIL import Image, ImageDraw, ImageFont

from atelier.service.errors import REFUSALS, ServiceError
from atelier.art.blocks.images import fit_longest
from atelier.art.progress import Progress, ProgressCallback, no_progress

if TYPE_CHECKING:
    import torch

    from atelier.service.catalog import Catalog
    from atelier.service.engines import EngineLoader

log = logging.getLogger(__name__)

#: Longest side of each tile, in pixels.
DEFAULT_TILE_SIZE = 256
#: Longest side a painting is scaled to before encoding: the instant service's style size, so
#: the sheet's tile is what the instant path paints (and its style cache entries are shared).
DEFAULT_STYLE_SIZE = 512
#: Height of the label strip under each tile on the composed sheet, in pixels.
LABEL_HEIGHT = 40
GAP = 6
BACKGROUND = (250, 249, 246)
INK = (34, 34, 34)
MUTED = (110, 110, 110)


class StyleCache(Protocol):
    """What the sheet needs of a cache (:class:`atelier.service.lru.LRUCache` fits)."""

    def get(self, key: Any) -> Any | None: ...

    def put(self, key: Any, value: Any) -> None: ...


@dataclass(frozen=True)
class SheetStyle:
    """One style to put on the sheet: a filter (``kind="filter"``, painted by the network of
    that name) or a painting (``kind="painting"``, ``load`` returns it as RGB)."""

    name: str
    title: str
    kind: Literal["filter", "painting"]
    artist: str | None = None
    load: Callable[[], Image.Image] | None = field(default=None, compare=False, repr=False)

    @property
    def cache_key(self) -> str:
        """The key the instant service caches this style's encoding under."""
        return f"filter:{self.name}" if self.kind == "filter" else f"name:{self.name}"


@dataclass(frozen=True)
class SheetTile:
    """One painted preview: the picture (``width`` x ``height``, unlabelled) and its label."""

    name: str
    title: str
    kind: Literal["photo", "filter", "painting"]
    engine: str  # "photo", "filter" or the instant engine ("microast")
    image: Image.Image = field(repr=False)
    artist: str | None = None

    @property
    def label(self) -> str:
        return f"{self.title} - {self.artist}" if self.artist else self.title


@dataclass(frozen=True)
class SheetMissing:
    """A style that could not be painted here, and why (one line, e.g. the install command)."""

    name: str
    title: str
    reason: str


@dataclass(frozen=True)
class Sheet:
    """The result of :func:`paint_sheet`.

    ``tiles`` start with the photo itself, then the filters, then the catalog's paintings, in
    the order given; ``image`` is the composed sheet with a label under every tile;
    ``seconds`` is the painting time (all tiles, without composing) and ``timings`` how it
    splits (``"filters"``, ``"encode_styles"``, ``"paintings"``; ``batch`` the paintings' batch
    size).
    """

    tiles: list[SheetTile]
    image: Image.Image = field(repr=False)
    missing: list[SheetMissing]
    size: tuple[int, int]
    seconds: float
    timings: dict[str, float]
    batch: int


def sheet_styles(catalog: Catalog, *, locale: str = "en") -> list[SheetStyle]:
    """Every style the catalog offers (the filters, then the installed paintings), titled in
    ``locale``."""
    styles = []
    for entry in catalog.entries():
        if entry.kind == "filter":
            styles.append(SheetStyle(name=entry.name, title=entry.title(locale), kind="filter", artist=entry.artist))
        elif entry.image_path is not None:
            styles.append(
                SheetStyle(
                    name=entry.name,
                    title=entry.title(locale),
                    kind="painting",
                    artist=entry.artist,
                    load=entry.load_image,
                )
            )
    return styles


def paint_sheet(
    loader: EngineLoader,
    photo: Image.Image,
    *,
    styles: Sequence[SheetStyle],
    size: int = DEFAULT_TILE_SIZE,
    engine: str = "microast",
    style_size: int = DEFAULT_STYLE_SIZE,
    style_cache: StyleCache | None = None,
    photo_title: str = "Photo",
    columns: int | None = None,
    progress: ProgressCallback = no_progress,
) -> Sheet:
    """Paint ``photo`` at ``size`` px (longest side) with every one of ``styles``.

    The filters run one network each; the paintings run on ``engine`` (an instant engine:
    ``microast`` or ``adain``) in one batch. A style whose weights or painting are missing is
    reported in :attr:`Sheet.missing`, not raised; an unusable photo or engine name is raised
    (:data:`~atelier.service.errors.REFUSALS`).
    """
    import torch

    from atelier.art.blocks.images import to_pil, to_tensor
    from atelier.service.engines import STYLE_ENGINES

    if engine not in STYLE_ENGINES:
        raise ServiceError(f"unknown instant engine {engine!r}; choose one of {', '.join(STYLE_ENGINES)}")
    if size < 16:
        raise ServiceError(f"the sheet's tiles must be at least 16 pixels, not {size}")
    started = time.perf_counter()
    small = fit_longest(photo.convert("RGB"), size)
    tensor = to_tensor(small).to(loader.device)
    filters = [s for s in styles if s.kind == "filter"]
    paintings = [s for s in styles if s.kind == "painting"]
    total = len(filters) + len(paintings) + (1 if paintings else 0)
    step = 0
    painted: dict[str, SheetTile] = {}
    missing: list[SheetMissing] = []
    timings: dict[str, float] = {}

    def report(stage: str) -> None:
        nonlocal step
        step += 1
        progress(Progress(stage, step, total))

    clock = time.perf_counter()
    for style in filters:
        try:
            net = loader.filter(style.name)
            with torch.inference_mode():
                out = net.stylize(tensor, strength=1.0)
        except (*REFUSALS, FileNotFoundError) as exc:
            missing.append(SheetMissing(style.name, style.title, str(exc)))
        else:
            painted[style.name] = SheetTile(style.name, style.title, "filter", "filter", to_pil(out), style.artist)
        report(style.name)
    timings["filters"] = time.perf_counter() - clock

    batch = 0
    if paintings:
        clock = time.perf_counter()
        encoded: list[tuple[SheetStyle, Any]] = []
        model = None
        try:
            model = loader.style_engine(engine)
        except REFUSALS as exc:
            missing.extend(SheetMissing(s.name, s.title, str(exc)) for s in paintings)
            step += len(paintings)
        if model is not None:
            for style in paintings:
                try:
                    encoded.append((style, _encoded_style(model, engine, style, style_size, style_cache, loader.device)))
                except (*REFUSALS, OSError) as exc:
                    missing.append(SheetMissing(style.name, style.title, _short(exc)))
                report(style.name)
        timings["encode_styles"] = time.perf_counter() - clock
        clock = time.perf_counter()
        if model is not None and encoded:
            batch = len(encoded)
            pictures = _paint_batch(model, tensor, [e for _, e in encoded])
            for (style, _), picture in zip(encoded, pictures):
                painted[style.name] = SheetTile(style.name, style.title, "painting", engine, to_pil(picture), style.artist)
        report(engine)
        timings["paintings"] = time.perf_counter() - clock
    seconds = time.perf_counter() - started

    tiles = [SheetTile("photo", photo_title, "photo", "photo", small)]
    tiles += [painted[s.name] for s in styles if s.name in painted]
    log.info(
        "sheet of %d styles at %dx%d in %.2f s (%d missing)", len(tiles) - 1, small.width, small.height, seconds, len(missing)
    )
    return Sheet(
        tiles=tiles,
        image=compose_sheet(tiles, columns=columns),
        missing=missing,
        size=small.size,
        seconds=seconds,
        timings=timings,
        batch=batch,
    )


def _encoded_style(
    model: Any, engine: str, style: SheetStyle, style_size: int, cache: StyleCache | None, device: torch.device
) -> Any:
    from atelier.art.blocks.images import to_tensor

    key = (engine, style.cache_key, style_size)  # the instant service's key for the same style
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    if style.load is None:
        raise ServiceError(f"style {style.name!r} has no painting")
    painting = fit_longest(style.load().convert("RGB"), style_size)
    encoded = model.encode_style(to_tensor(painting).to(device))
    if cache is not None:
        cache.put(key, encoded)
    return encoded


def _paint_batch(model: Any, photo: torch.Tensor, styles: list[Any]) -> list[torch.Tensor]:
    """The photo painted with each style, in one decoder call when the engine's style signals
    can be given per row of a batch (MicroAST and AdaIN both can), else one call per style."""
    import torch

    from atelier.art.blocks.lattice import suppress_lattice

    content = model.encode_content(photo)
    per_row = _per_row(styles)
    with torch.inference_mode():
        if per_row is None:
            out = torch.cat([model.decode(content, [s])[0:1] for s in styles])
        else:
            out = model.decode(_repeat(content, len(styles)), [per_row])
        if getattr(model, "name", "") == "microast":  # as the instant service paints it
            out = suppress_lattice(out, photo)
        return [out[i : i + 1] for i in range(len(styles))]


def _repeat(encoded: Any, count: int) -> Any:
    """An encoded photo (a dataclass of tensors with a batch of one) as a batch of ``count``."""
    import dataclasses

    import torch

    if isinstance(encoded, torch.Tensor):
        return encoded.expand(count, *encoded.shape[1:]).contiguous() if encoded.shape[0] == 1 else encoded
    if dataclasses.is_dataclass(encoded) and not isinstance(encoded, type):
        values = {f.name: _repeat(getattr(encoded, f.name), count) for f in dataclasses.fields(encoded) if f.init}
        return type(encoded)(**values)
    return encoded


def _per_row(styles: list[Any]) -> Any | None:
    """One style object whose signals differ per row of the batch: row i is ``styles[i]``.

    MicroAST keeps one style's signals as (64,) vectors and takes (N, 64) for per-photo
    signals; AdaIN keeps (1, C, 1, 1) statistics and takes (N, C, 1, 1).
    """
    import dataclasses

    import torch

    from atelier.art.engines.adain import StyleStatistics
    from atelier.art.engines.microast import MicroASTStyle

    first = styles[0]
    if isinstance(first, MicroASTStyle):
        if any(getattr(s, f.name).dim() != 1 for s in styles for f in dataclasses.fields(s)):
            return None
        return MicroASTStyle(*(torch.stack([getattr(s, f.name) for s in styles]) for f in dataclasses.fields(first)))
    if isinstance(first, StyleStatistics):
        if any(s.mean.shape[0] != 1 for s in styles):
            return None
        return StyleStatistics(mean=torch.cat([s.mean for s in styles]), std=torch.cat([s.std for s in styles]))
    return None


def _short(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"its painting is missing ({exc.filename or exc})"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# ------------------------------------------------------------------------------------------------
# composing


def compose_sheet(tiles: Sequence[SheetTile], *, columns: int | None = None) -> Image.Image:
    """The tiles on a grid (``columns``; default: about square), each with its title under it
    (and the artist, smaller, when known). Tiles are centred in cells the size of the largest."""
    if not tiles:
        raise ValueError("a sheet needs at least one tile")
    count = len(tiles)
    columns = max(1, min(count, columns or math.ceil(math.sqrt(count))))
    rows = math.ceil(count / columns)
    cell_w = max(t.image.width for t in tiles)
    cell_h = max(t.image.height for t in tiles)
    width = columns * cell_w + (columns + 1) * GAP
    height = rows * (cell_h + LABEL_HEIGHT) + (rows + 1) * GAP
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    title_font = _font(14)
    small_font = _font(11)
    for index, tile in enumerate(tiles):
        row, col = divmod(index, columns)
        x0 = GAP + col * (cell_w + GAP)
        y0 = GAP + row * (cell_h + LABEL_HEIGHT + GAP)
        sheet.paste(tile.image, (x0 + (cell_w - tile.image.width) // 2, y0 + (cell_h - tile.image.height) // 2))
        text_y = y0 + cell_h + 4
        draw.text((x0 + 2, text_y), _fit(draw, tile.title, title_font, cell_w - 4), fill=INK, font=title_font)
        if tile.artist:
            draw.text((x0 + 2, text_y + 18), _fit(draw, tile.artist, small_font, cell_w - 4), fill=MUTED, font=small_font)
    return sheet


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font (scalable when Pillow has FreeType): no font file to find or ship.
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text`` cut with an ellipsis so it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "..."
