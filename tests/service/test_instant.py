"""The instant service: its caches and batches, and the batched pictures equal the single ones."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.art.blocks.images import decode_image, image_hash
from atelier.service.engines import EngineLoader
from atelier.service.errors import StyleChoiceError
from atelier.service.instant import InstantService, fit_dims
from atelier.service.refs import PhotoRef, StyleRef
from atelier.service.stylize import stylize_image

from tests.service.service_fixtures import small_jpeg

LIMITS = {"max_pixels": 10**8, "max_bytes": 10**8}


# ------------------------------------------------------------------------------------------------
# the service, with the real weights


@pytest.fixture(scope="module")
def loader(models_dir: Path) -> EngineLoader:
    return EngineLoader(models_dir=models_dir, device=torch.device("cpu"))


@pytest.fixture
def service(loader: EngineLoader) -> Iterator[InstantService]:
    service = InstantService(loader, max_size=128, batch_window_ms=50, batch_max=8)
    yield service
    service.close()


def _photo(path: Path, longest: int, loads: list[int] | None = None) -> tuple[PhotoRef, Image.Image]:
    data = small_jpeg(path, longest)
    image = decode_image(data, **LIMITS)

    def load() -> Image.Image:
        if loads is not None:
            loads.append(1)
        return image

    return PhotoRef(key=image_hash(data), width=image.width, height=image.height, load=load), image


def _painting(path: Path) -> tuple[StyleRef, Image.Image]:
    data = small_jpeg(path, 256)
    image = decode_image(data, **LIMITS)
    return StyleRef(key="sha256:" + image_hash(data), load=lambda: image), image


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_a_cached_re_pick_decodes_nothing_and_paints_the_same_picture(
    service: InstantService, loader: EngineLoader, content_dir: Path, style_dir: Path
) -> None:
    loads: list[int] = []
    photo, image = _photo(content_dir / "dog.jpg", 128, loads)
    starry, _ = _painting(style_dir / "starry_night.jpg")
    muse, muse_image = _painting(style_dir / "la_muse.jpg")
    first = service.stylize(photo, starry)
    assert not first.content_cached and not first.style_cached
    second = service.stylize(photo, muse)
    assert second.content_cached and not second.style_cached
    third = service.stylize(photo, starry)
    assert third.content_cached and third.style_cached
    assert len(loads) == 1
    assert np.array_equal(_array(first.image), _array(third.image))
    expected = stylize_image(loader, image, engine="microast", styles=[muse_image])
    assert np.abs(_array(second.image) - _array(expected)).max() <= 1


def test_concurrent_requests_are_painted_in_one_batch_with_the_same_result(
    service: InstantService, content_dir: Path, style_dir: Path
) -> None:
    # dog is 4:3, chicago and kite 3:2: two shapes, so two groups in a batch.
    photos = [_photo(content_dir / name, 128)[0] for name in ("dog.jpg", "chicago.jpg", "dog.jpg", "kite.jpg")]
    starry, _ = _painting(style_dir / "starry_night.jpg")
    muse, _ = _painting(style_dir / "la_muse.jpg")
    styles = [starry, muse, starry, starry]
    alone = [service.stylize(p, s, size=96).image for p, s in zip(photos, styles)]
    service.cache.clear()
    results: list = [None] * 4

    def call(i: int) -> None:
        results[i] = service.stylize(photos[i], styles[i], size=96)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(service._batcher.batches) > 1  # some were painted together
    for single, batched in zip(alone, results):
        assert np.abs(_array(single) - _array(batched.image)).max() <= 1


def test_filters_blend_the_cached_full_strength_picture(service: InstantService, loader: EngineLoader, content_dir: Path) -> None:
    photo, image = _photo(content_dir / "dog.jpg", 128)
    full = service.stylize(photo, StyleRef.of_filter("mosaic"))
    half = service.stylize(photo, StyleRef.of_filter("mosaic"), alpha=0.5)
    assert half.content_cached
    expected = stylize_image(loader, image, engine="filter", filter_name="mosaic", alpha=0.5)
    assert np.abs(_array(half.image) - _array(expected)).max() <= 2
    assert np.abs(_array(full.image) - _array(half.image)).mean() > 5


def test_a_blend_of_two_paintings_is_what_the_engine_paints_with_their_weights(
    service: InstantService, loader: EngineLoader, content_dir: Path, style_dir: Path
) -> None:
    photo, image = _photo(content_dir / "dog.jpg", 128)
    starry, starry_image = _painting(style_dir / "starry_night.jpg")
    muse, muse_image = _painting(style_dir / "la_muse.jpg")
    mixed = service.stylize(photo, StyleRef.blended(starry, muse, 0.3))
    expected = stylize_image(loader, image, engine="microast", styles=[starry_image, muse_image], style_weights=[0.7, 0.3])
    assert np.abs(_array(mixed.image) - _array(expected)).max() <= 1
    # Its two ends are the two paintings; a filter has no statistics to mix.
    assert StyleRef.blended(starry, muse, 0.0) == starry and StyleRef.blended(starry, muse, 1.0) == muse
    with pytest.raises(StyleChoiceError, match="only two paintings"):
        StyleRef.blended(starry, StyleRef.of_filter("candy"), 0.5)


def test_refusals_name_the_problem(service: InstantService, content_dir: Path) -> None:
    photo, _ = _photo(content_dir / "dog.jpg", 128)
    with pytest.raises(StyleChoiceError, match="between 0 and 1"):
        service.stylize(photo, StyleRef.of_filter("candy"), alpha=1.5)
    with pytest.raises(StyleChoiceError, match="unknown engine"):
        service.stylize(photo, StyleRef("name:x", load=lambda: Image.new("RGB", (8, 8))), engine="gatys")
    tiny = PhotoRef(key="tiny", width=200, height=4, load=lambda: Image.new("RGB", (200, 4)))
    with pytest.raises(StyleChoiceError, match="at least 8 pixels"):
        service.stylize(tiny, StyleRef.of_filter("candy"))


def test_stats_report_the_running_latency_and_batches(service: InstantService, content_dir: Path) -> None:
    photo, _ = _photo(content_dir / "dog.jpg", 64)
    for _ in range(3):
        service.stylize(photo, StyleRef.of_filter("candy"))
    stats = service.stats()
    assert stats["calls"] == 3 and stats["latency_ms"]["window"] == 3
    assert stats["cache"]["content"]["hits"] >= 2


def test_fit_dims_matches_fit_longest() -> None:
    from atelier.art.blocks.images import fit_longest

    for size in [(160, 120), (120, 160), (333, 101), (64, 64)]:
        for longest in (50, 96, 257):
            assert fit_longest(Image.new("RGB", size), longest).size == fit_dims(*size, longest)


def test_a_face_is_painted_finer_by_the_service_as_by_render(loader: EngineLoader, content_dir: Path, style_dir: Path) -> None:
    service = InstantService(loader, max_size=256, batch_window_ms=0)
    plain = InstantService(loader, max_size=256, batch_window_ms=0, faces=False)
    try:
        photo, image = _photo(content_dir / "brad_pitt.jpg", 256)  # the face about 140 px: painted at 2.7x
        starry, starry_image = _painting(style_dir / "starry_night.jpg")
        for style, kwargs in ((starry, {"engine": "microast", "styles": [starry_image]}),
                              (StyleRef.of_filter("candy"), {"engine": "filter", "filter_name": "candy"})):
            engine = kwargs["engine"]
            with_faces = service.stylize(photo, style, engine="microast")  # a filter ref picks its own
            without = plain.stylize(photo, style, engine="microast")
            expected = stylize_image(loader, image, **kwargs)  # type: ignore[arg-type]
            assert np.abs(_array(with_faces.image) - _array(expected)).max() <= 2, engine
            face = (90, 80, 170, 150)  # around the eyes
            changed = np.abs(_array(with_faces.image.crop(face)) - _array(without.image.crop(face))).mean()
            corner = np.abs(_array(with_faces.image.crop((0, 0, 40, 40))) - _array(without.image.crop((0, 0, 40, 40)))).max()
            assert changed > 5 and corner == 0, (engine, changed, corner)
    finally:
        service.close()
        plain.close()
