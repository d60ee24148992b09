"""The instant service: caches, micro-batching and the batched pictures equal the single ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.art.blocks.images import decode_image, image_hash
from atelier.service.engines import EngineLoader
from atelier.service.instant import (
    InstantService,
    LRUCache,
    MicroBatcher,
    PhotoRef,
    StyleChoiceError,
    StyleRef,
    fit_dims,
    nbytes,
    stack,
    stylize_image,
    tied_style_size,
)

from tests.service.service_fixtures import small_jpeg

LIMITS = {"max_pixels": 10**8, "max_bytes": 10**8}


# ------------------------------------------------------------------------------------------------
# the LRU cache


def test_the_cache_evicts_the_least_recently_used_past_its_byte_budget() -> None:
    cache = LRUCache(300, cost=nbytes)
    for name in "abc":
        cache.put(name, torch.zeros(25))  # 100 bytes each
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", torch.zeros(25))
    assert "b" not in cache and all(k in cache for k in "acd")
    assert cache.used == 300
    cache.put("huge", torch.zeros(1000))  # bigger than the whole cache: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 3


def test_the_cache_counts_hits_and_misses() -> None:
    cache = LRUCache(2)
    cache.put("x", 1)
    cache.get("x")
    cache.get("y")
    assert (cache.hits, cache.misses) == (1, 1)


def test_nbytes_walks_nested_dataclasses_of_tensors(models_dir: Path) -> None:
    engine = EngineLoader(models_dir=models_dir, device=torch.device("cpu")).style_engine("microast")
    encoded = engine.encode_content(torch.rand(1, 3, 32, 48))
    assert nbytes(encoded) == 64 * 8 * 12 * 4 + 8 * 64 * 4


# ------------------------------------------------------------------------------------------------
# the micro-batcher


def test_concurrent_items_are_batched_up_to_the_cap() -> None:
    seen: list[list[int]] = []
    gate = threading.Event()

    def run(items: list[int]) -> list[int]:
        gate.wait(5)
        seen.append(items)
        return [i * 10 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, window_s=0.05, max_batch=3)
    try:
        futures = [batcher.submit(i) for i in range(7)]
        gate.set()
        assert [f.result(5) for f in futures] == [i * 10 for i in range(7)]
    finally:
        batcher.close()
    assert all(len(batch) <= 3 for batch in seen)
    assert sorted(i for batch in seen for i in batch) == list(range(7))
    assert max(len(batch) for batch in seen) == 3


def test_batches_keep_to_their_cost_budget_and_lose_nothing() -> None:
    # Pixels, in the service: past a budget a CPU batch runs slower per image.
    seen: list[list[int]] = []
    gate = threading.Event()

    def run(items: list[int]) -> list[int]:
        gate.wait(5)
        seen.append(items)
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(run, window_s=0.05, max_batch=8, cost=float, max_cost=10)
    try:
        futures = [batcher.submit(i) for i in (12, 4, 5, 3, 2, 6, 1)]
        gate.set()
        assert [f.result(5) for f in futures] == [12, 4, 5, 3, 2, 6, 1]
    finally:
        batcher.close()
    # 12 alone passes the budget but is painted (alone); the item that would pass it opens the next batch.
    assert sorted(i for batch in seen for i in batch) == [1, 2, 3, 4, 5, 6, 12]
    assert [i for batch in seen for i in batch] == [12, 4, 5, 3, 2, 6, 1]  # arrival order kept
    assert all(len(batch) == 1 or sum(batch) <= 10 for batch in seen)
    assert [12] in seen


def test_a_lone_item_is_painted_when_the_window_ends() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: items, window_s=0.02, max_batch=8)
    try:
        assert batcher.submit(5).result(60) == 5
        assert list(batcher.batches) == [1]
    finally:
        batcher.close()


def test_a_lone_caller_does_not_wait_for_company_when_nobody_is_coming() -> None:
    # The window is ten minutes on purpose: with nobody else on the way it is not waited for, so
    # the result comes long before result()'s timeout (which a wait for the window would pass).
    coming = {"n": 1}
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: items, window_s=600.0, max_batch=8, coming=lambda: coming["n"])
    try:
        assert batcher.submit(5).result(60) == 5
        coming["n"] = 2  # another call is decoding its photo: the window is waited for it
        first = batcher.submit(6)
        time.sleep(0.2)
        second = batcher.submit(7)
        assert (first.result(5), second.result(5)) == (6, 7)
        assert list(batcher.batches)[-1] == 2
    finally:
        batcher.close()


def test_an_error_for_one_item_reaches_that_caller_alone() -> None:
    def run(items: list[int]) -> list[int | BaseException]:
        return [ValueError("odd") if i % 2 else i for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, window_s=0.05, max_batch=4)
    try:
        futures = [batcher.submit(i) for i in range(4)]
        assert futures[0].result(5) == 0 and futures[2].result(5) == 2
        with pytest.raises(ValueError, match="odd"):
            futures[1].result(5)
    finally:
        batcher.close()


def test_close_finishes_what_was_submitted_and_refuses_more() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: [i + 1 for i in items], window_s=0.0, max_batch=2)
    futures = [batcher.submit(i) for i in range(5)]
    batcher.close()
    assert [f.result(1) for f in futures] == [1, 2, 3, 4, 5]
    with pytest.raises(Exception, match="shutting down"):
        batcher.submit(1)


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


def test_stack_concatenates_engine_batches_and_refuses_different_sizes(models_dir: Path) -> None:
    engine = EngineLoader(models_dir=models_dir, device=torch.device("cpu")).style_engine("microast")
    a = engine.encode_content(torch.rand(1, 3, 32, 32))
    b = engine.encode_content(torch.rand(1, 3, 32, 32))
    both = stack([a, b])
    assert both.batch == 2 and both.own_style.mean1.shape[0] == 2
    c = engine.encode_content(torch.rand(1, 3, 32, 40))
    with pytest.raises((ValueError, RuntimeError)):
        stack([a, c])


def test_fit_dims_matches_fit_longest() -> None:
    from atelier.art.blocks.images import fit_longest

    for size in [(160, 120), (120, 160), (333, 101), (64, 64)]:
        for longest in (50, 96, 257):
            assert fit_longest(Image.new("RGB", size), longest).size == fit_dims(*size, longest)


def test_unstack_undoes_stack(models_dir: Path) -> None:
    from atelier.service.instant import unstack

    engine = EngineLoader(models_dir=models_dir, device=torch.device("cpu")).style_engine("microast")
    photos = torch.rand(3, 3, 32, 40)
    together = engine.encode_content(photos)
    apart = unstack(together, 3)
    alone = engine.encode_content(photos[1:2])
    assert apart[1].batch == 1 and apart[1].size == alone.size
    assert torch.allclose(apart[1].features, alone.features, atol=1e-5)
    assert torch.allclose(apart[1].own_style.mean1, alone.own_style.mean1, atol=1e-5)
    assert torch.equal(stack(apart).features, together.features)


def test_the_style_size_follows_the_output_between_512_and_the_paintings_own() -> None:
    assert tied_style_size((1024, 640), (512, 384)) == 512  # the AdaIN reference's size
    assert tied_style_size((1024, 640), (800, 600)) == 800
    assert tied_style_size((1024, 640), (3415, 2160)) == 1024  # the painting at its full size
    assert tied_style_size((300, 200), (3415, 2160)) == 512  # a small painting: as before


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


@pytest.mark.parametrize("engine", ["microast", "adain"])
@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_the_style_cache_of_a_batch_encodes_each_painting_once_and_paints_the_same(
    loader: EngineLoader, content_dir: Path, style_dir: Path, engine: str, alpha: float
) -> None:
    from atelier.service.instant import AdaINWeights

    adain = AdaINWeights(weights="ust-conv3_1") if engine == "adain" else AdaINWeights()
    starry = decode_image(style_dir / "starry_night.jpg", **LIMITS)
    muse = decode_image(style_dir / "la_muse.jpg", **LIMITS)
    cache: dict = {}
    for name in ("dog.jpg", "chicago.jpg"):
        photo = decode_image(content_dir / name, **LIMITS).resize((128, 96))
        options = dict(engine=engine, styles=[starry, muse], style_weights=[0.6, 0.4], alpha=alpha, adain=adain)
        alone = stylize_image(loader, photo, **options)  # type: ignore[arg-type]
        cached = stylize_image(loader, photo, style_cache=cache, **options)  # type: ignore[arg-type]
        assert np.abs(_array(alone) - _array(cached)).max() <= 1
    assert len(cache) == 1  # both photos are 128x96: one size, one encoding of the two paintings
