"""``atelier bench quality``: the commission's picture against MicroAST's, by the numbers (issue
15's quality record).

For each photo of a fixed set (:data:`PHOTOS`: a pet, a portrait, a landscape, small faces) and
each style of the catalog (``ATELIER_STYLES_DIR``) that can be commissioned:

* the **commission** picture is painted as the commission job paints a preview
  (:func:`atelier.service.commission.job.paint_picture`, its preview branch, called without the
  queue): the style's own recipe (:func:`~atelier.service.painting.choose_recipe`) shrunk to the
  preview size (:func:`~atelier.service.commission.job.preview_recipe`), painted and finished
  by :func:`~atelier.service.painting.render_painting` with the style's finishing. The
  watermark is left off: it is not the painting, and it would move both distances a little;
* the **MicroAST** picture is ``atelier render --engine microast``'s
  (:func:`~atelier.service.stylize.stylize_image`: faces painted finer, the lattice taken out)
  at the same size, with the style's painting;
* both are measured with :func:`atelier.art.quality.measure_distances` at that size against
  the photo and the painting, with the commission's VGG encoder.

A row says whether the commission is the better picture by the issue's rule: its style
distance is no higher than MicroAST's at a content distance no higher than MicroAST's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

#: The fixed photos, by label: files of ``../shared/images/content``. There is no group photo
#: there; Harriet (a seated full figure in 128 px) is the smallest face there is.
PHOTOS: dict[str, str] = {
    "pet": "dog.jpg",
    "portrait": "brad_pitt.jpg",
    "landscape": "golden_gate.jpg",
    "faces": "harriet_128x128.jpg",
}
#: The preview size the commission job paints at by default (ATELIER_PREVIEW_MAX_SIZE).
DEFAULT_SIZE = 256


@dataclass(frozen=True)
class QualityRow:
    """One photo in one style: both pictures' distances and how long each took."""

    photo: str
    style: str
    size: int
    commission_style: float
    commission_content: float
    microast_style: float
    microast_content: float
    commission_seconds: float
    microast_seconds: float
    recipe: str

    @property
    def commission_better(self) -> bool:
        """The issue's rule: style distance <= MicroAST's at content distance <= MicroAST's."""
        return self.commission_style <= self.microast_style and self.commission_content <= self.microast_content

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "commission_better": self.commission_better}


def photo_paths(chosen: Sequence[str] | None, *, images_dir: Path) -> dict[str, Path]:
    """The photos to measure by label: labels of :data:`PHOTOS` (files of ``images_dir``) or
    paths to image files (labelled by their stem); all of :data:`PHOTOS` when ``chosen`` is
    empty. Unknown labels and missing files raise ValueError."""
    found: dict[str, Path] = {}
    for item in chosen or list(PHOTOS):
        if item in PHOTOS:
            path = images_dir / PHOTOS[item]
            label = item
        else:
            path = Path(item)
            label = path.stem
            if path.suffix == "":
                raise ValueError(f"unknown photo {item!r}; give {', '.join(PHOTOS)} or an image file")
        if not path.is_file():
            raise ValueError(f"{path} does not exist")
        found[label] = path
    return found


def bench_quality(
    *,
    models_dir: Path,
    styles_dir: Path,
    photos: dict[str, Path],
    styles: Sequence[str] | None = None,
    size: int = DEFAULT_SIZE,
    device: str = "cpu",
    keep: Path | None = None,
    report: Callable[[str], None] = lambda line: None,
) -> list[QualityRow]:
    """One row per photo and catalog style (see the module's docstring). ``styles`` names the
    catalog styles to paint (default: every one that can be commissioned). ``keep`` saves every
    picture there as ``PHOTO-STYLE-commission.png`` and ``PHOTO-STYLE-microast.png``.
    ``report`` gets one line per render as it ends."""
    from atelier.art.blocks.devices import resolve_device
    from atelier.art.blocks.images import decode_image
    from atelier.art.quality import measure_distances
    from atelier.install.styles import load_catalog
    from atelier.service.commission.job import preview_recipe
    from atelier.service.engines import EngineLoader
    from atelier.service.painting import choose_recipe, load_encoder, render_painting
    from atelier.service.stylize import stylize_image

    target = resolve_device(device)
    catalog = [s for s in load_catalog(styles_dir) if s.engine == "gatys" and s.recipe is not None]
    if styles:
        by_name = {s.name: s for s in catalog}
        unknown = [name for name in styles if name not in by_name]
        if unknown:
            raise ValueError(
                f"no commission style {unknown[0]!r} in {styles_dir}; the catalog has {', '.join(sorted(by_name)) or 'none'}"
            )
        catalog = [by_name[name] for name in styles]
    if not catalog:
        raise ValueError(f"no commission styles in {styles_dir} (add some with `atelier styles add`)")
    encoder, _ = load_encoder(models_dir, device=target)
    loader = EngineLoader(models_dir=models_dir, device=target)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    # Decoded as the service decodes an upload (EXIF orientation, sRGB); these files are ours.
    opened = {label: decode_image(path, max_pixels=100_000_000, max_bytes=200_000_000) for label, path in photos.items()}
    rows: list[QualityRow] = []
    total = len(opened) * len(catalog)
    for style in catalog:
        painting = style.load_painting()
        recipe = preview_recipe(choose_recipe(encoder.available_layers, style=style), size)
        for label, photo in opened.items():
            began = time.perf_counter()
            rendered = render_painting(
                photo, models_dir=models_dir, style=style, recipe=recipe, finishing=True, watermark=False,
                device=target, encoder=encoder,
            )
            commission = rendered.image
            commission_seconds = time.perf_counter() - began
            began = time.perf_counter()
            microast = stylize_image(loader, photo, engine="microast", styles=[painting], size=size)
            microast_seconds = time.perf_counter() - began
            ours = measure_distances(commission, photo=photo, painting=painting, encoder=encoder, size=size)
            theirs = measure_distances(microast, photo=photo, painting=painting, encoder=encoder, size=size)
            row = QualityRow(
                photo=label, style=style.name, size=size,
                commission_style=ours.style, commission_content=ours.content,
                microast_style=theirs.style, microast_content=theirs.content,
                commission_seconds=commission_seconds, microast_seconds=microast_seconds,
                recipe=recipe.summary(),
            )
            rows.append(row)
            if keep is not None:
                commission.save(keep / f"{label}-{style.name}-commission.png")
                microast.save(keep / f"{label}-{style.name}-microast.png")
            log.info("quality %s", row.as_dict())
            report(
                f"[{len(rows)}/{total}] {label} x {style.name}: commission {ours.style:.3f}/{ours.content:.2f} "
                f"in {commission_seconds:.1f} s, MicroAST {theirs.style:.3f}/{theirs.content:.2f} in {microast_seconds:.1f} s"
            )
    return rows


#: The table's columns: header and how a row fills it.
COLUMNS: tuple[tuple[str, Callable[[QualityRow], str]], ...] = (
    ("photo", lambda r: r.photo),
    ("style", lambda r: r.style),
    ("commission style", lambda r: f"{r.commission_style:.3f}"),
    ("commission content", lambda r: f"{r.commission_content:.2f}"),
    ("MicroAST style", lambda r: f"{r.microast_style:.3f}"),
    ("MicroAST content", lambda r: f"{r.microast_content:.2f}"),
    ("commission s", lambda r: f"{r.commission_seconds:.1f}"),
    ("MicroAST s", lambda r: f"{r.microast_seconds:.2f}"),
    ("commission better", lambda r: "yes" if r.commission_better else "no"),
)


def markdown_table(rows: Sequence[QualityRow]) -> str:
    """The rows as a Markdown table (for docs/QUALITY.md)."""
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row) for _, cell in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"
