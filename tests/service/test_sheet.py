"""Every style on one photo: the sheet paints each filter and catalog style, in one batch, and
each tile is what the instant path paints for that style."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from atelier.art.blocks.images import decode_image, fit_longest, to_tensor
from atelier.install.styles import add_style
from atelier.service.catalog import Catalog
from atelier.service.engines import EngineLoader
from atelier.service.instant import InstantService
from atelier.service.lru import LRUCache
from atelier.service.refs import PhotoRef, StyleRef
from atelier.service.sheet import SheetStyle, compose_sheet, paint_sheet, sheet_styles

LIMITS = {"max_pixels": 10**8, "max_bytes": 10**8}


@pytest.fixture(scope="module")
def loader(models_dir: Path) -> EngineLoader:
    return EngineLoader(models_dir=models_dir, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def photo(content_dir: Path) -> Image.Image:
    return decode_image(content_dir / "dog.jpg", **LIMITS)


@pytest.fixture()
def catalog(tmp_path: Path, style_dir: Path) -> Catalog:
    styles = tmp_path / "styles"
    add_style(style_dir / "starry_night.jpg", name="starry_night", styles_dir=styles, titles={"en": "The Starry Night", "es": "La noche estrellada"}, artist="Vincent van Gogh")
    add_style(style_dir / "la_muse.jpg", name="la_muse", styles_dir=styles, titles={"en": "La Muse"}, artist="Pablo Picasso")
    return Catalog(styles)


def difference(a: Image.Image, b: Image.Image) -> float:
    return float((to_tensor(a) - to_tensor(b)).abs().max())


def test_every_filter_and_catalog_style_gets_a_tile_after_the_photo(loader: EngineLoader, photo: Image.Image, catalog: Catalog) -> None:
    styles = sheet_styles(catalog, locale="es")
    sheet = paint_sheet(loader, photo, styles=styles, size=128)
    names = [t.name for t in sheet.tiles]
    assert names[:6] == ["photo", "candy", "mosaic", "rain_princess", "udnie", "pointilism"]
    assert sorted(names[6:]) == ["la_muse", "starry_night"]
    assert names[1:] == [s.name for s in styles]
    assert not sheet.missing
    assert sheet.size == (128, 96)  # dog.jpg is 768x576
    assert all(t.image.size == (128, 96) for t in sheet.tiles)
    titles = {t.name: t.title for t in sheet.tiles}
    assert titles["starry_night"] == "La noche estrellada" and titles["pointilism"] == "Puntillismo"
    assert [t.kind for t in sheet.tiles] == ["photo"] + ["filter"] * 5 + ["painting"] * 2
    # The two paintings were painted in one decoder call.
    assert sheet.batch == 2


def test_a_painting_tile_is_what_the_instant_service_paints_for_that_style(loader: EngineLoader, photo: Image.Image, catalog: Catalog) -> None:
    sheet = paint_sheet(loader, photo, styles=sheet_styles(catalog), size=128)
    small = fit_longest(photo, 128)
    service = InstantService(loader, batch_window_ms=0)
    try:
        for name in ("starry_night", "la_muse"):
            entry = catalog.get(name)
            assert entry is not None
            alone = service.stylize(
                PhotoRef(key="dog", width=small.width, height=small.height, load=lambda: small),
                StyleRef(key=f"name:{name}", load=entry.load_image),
                engine="microast",
            )
            tile = next(t for t in sheet.tiles if t.name == name)
            # The batched decode equals the one-style decode (same sums, up to float rounding).
            assert difference(tile.image, alone.image) <= 2 / 255
        filtered = service.stylize(
            PhotoRef(key="dog", width=small.width, height=small.height, load=lambda: small), StyleRef.of_filter("candy")
        )
        assert difference(next(t for t in sheet.tiles if t.name == "candy").image, filtered.image) <= 2 / 255
    finally:
        service.close()
    # Each row of the batch got its own style (not the first one repeated).
    starry = next(t for t in sheet.tiles if t.name == "starry_night").image
    muse = next(t for t in sheet.tiles if t.name == "la_muse").image
    assert difference(starry, muse) > 0.2


def test_the_style_cache_is_shared_with_the_instant_service_keys(loader: EngineLoader, photo: Image.Image, catalog: Catalog) -> None:
    cache = LRUCache(16)
    paintings = [s for s in sheet_styles(catalog) if s.kind == "painting"]
    paint_sheet(loader, photo, styles=paintings, size=64, style_cache=cache)
    assert ("microast", "name:starry_night", 512) in cache and ("microast", "name:la_muse", 512) in cache
    assert cache.misses == 2

    def never() -> Image.Image:
        raise AssertionError("the painting was decoded again although its encoding was cached")

    again = [SheetStyle(s.name, s.title, "painting", load=never) for s in paintings]
    paint_sheet(loader, photo, styles=again, size=64, style_cache=cache)
    assert cache.hits == 2


def test_missing_weights_leave_a_style_off_with_the_reason_and_paint_the_rest(tmp_path: Path, models_dir: Path, photo: Image.Image, catalog: Catalog) -> None:
    partial = tmp_path / "models"
    (partial / "fast_neural_style").mkdir(parents=True)
    (partial / "fast_neural_style" / "candy.pth").symlink_to(models_dir / "fast_neural_style" / "candy.pth")
    loader = EngineLoader(models_dir=partial, device=torch.device("cpu"))
    sheet = paint_sheet(loader, photo, styles=sheet_styles(catalog), size=64)
    assert [t.name for t in sheet.tiles] == ["photo", "candy"]
    missing = {m.name: m.reason for m in sheet.missing}
    assert set(missing) == {"mosaic", "rain_princess", "udnie", "pointilism", "starry_night", "la_muse"}
    assert "atelier models" in missing["mosaic"] and "atelier models" in missing["starry_night"]


def test_the_composed_sheet_has_a_cell_and_a_label_strip_per_tile(loader: EngineLoader, photo: Image.Image, catalog: Catalog) -> None:
    sheet = paint_sheet(loader, photo, styles=sheet_styles(catalog), size=100, columns=4)
    count = len(sheet.tiles)  # 8: the photo, 5 filters, 2 paintings -> 2 rows of 4
    assert count == 8
    width, height = sheet.image.size
    assert width == 4 * 100 + 5 * 6 and height == 2 * (75 + 40) + 3 * 6
    # The first cell holds the photo itself, unchanged.
    cell = sheet.image.crop((6, 6, 106, 81))
    assert difference(cell, sheet.tiles[0].image) == 0
    # Labels are drawn: the strip under the first tile has dark text pixels on the light ground.
    strip = to_tensor(sheet.image.crop((6, 81, 106, 121)))
    assert float(strip.min()) < 0.4


def test_compose_sheet_refuses_no_tiles() -> None:
    with pytest.raises(ValueError):
        compose_sheet([])
