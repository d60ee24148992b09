"""Benchmarks of the instant engines: images/s by size and batch, and what caching saves."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from atelier.art.engines.protocol import StyleEngine
from atelier.art.errors import ModelError
from atelier.bench.timing import Row, measure
from atelier.service.engines import EngineLoader

log = logging.getLogger(__name__)

STYLE_SIZE = 512


@dataclass(frozen=True)
class Subject:
    """An engine to measure and how it was loaded (real weights, or random in the real layout)."""

    name: str
    note: str
    make: Callable[[], object]


def synthetic_image(height: int, width: int, *, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A smooth random picture: the speed of these networks does not depend on the content."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(2, height // 32), max(2, width // 32), generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


def subjects(loader: EngineLoader) -> Iterator[Subject]:
    """Every instant engine this machine can run, with the weights it has."""
    yield Subject("filter (candy)", "real weights", lambda: loader.filter("candy"))
    yield Subject("microast", "real weights", lambda: loader.style_engine("microast"))
    yield Subject("adain relu3_1", "real weights (ust-conv3_1)", lambda: loader.style_engine("adain", weights="ust-conv3_1"))
    try:
        official = loader.style_engine("adain", weights="adain")
        yield Subject("adain relu4_1", "official weights", lambda: official)
    except ModelError:
        yield Subject("adain relu4_1", "random weights, official layout", lambda: _random_adain(loader.device))


def _random_adain(device: torch.device) -> StyleEngine:
    from atelier.art.engines.adain import AdaIN, Decoder
    from atelier.art.blocks.vgg import VGGEncoder

    return AdaIN(VGGEncoder.random(up_to="relu4_1"), Decoder.random(level="relu4_1")).to(device)


def bench_engines(
    loader: EngineLoader,
    *,
    sizes: Sequence[int] = (512, 1024),
    batches: Sequence[int] = (1, 8),
    repeat: int = 3,
    only: Sequence[str] | None = None,
) -> Iterator[Row]:
    """images/s of each engine at each square size and batch, plus the cached re-pick speed-up."""
    device = loader.device
    for subject in subjects(loader):
        if only and not any(word in subject.name for word in only):
            continue
        try:
            engine = subject.make()
        except ModelError as exc:
            log.warning("skipping %s: %s", subject.name, exc)
            yield Row("engines", subject.name, float("nan"), note=f"skipped: {exc}")
            continue
        style = synthetic_image(STYLE_SIZE, STYLE_SIZE, seed=1).to(device)
        for size in sizes:
            for batch in batches:
                photos = synthetic_image(size, size, batch=batch).to(device)
                work = _full_work(engine, photos, style)
                seconds, peak = measure(work, repeat=repeat)
                yield Row(
                    "engines",
                    subject.name,
                    seconds,
                    items=batch,
                    peak_mb=peak,
                    params={"size": size, "batch": batch, "device": str(device)},
                    note=subject.note,
                )
            if isinstance(engine, StyleEngine):
                yield from _cached_rows(engine, subject, size=size, style=style, repeat=repeat)


def _full_work(engine: object, photos: torch.Tensor, style: torch.Tensor) -> Callable[[], object]:
    if isinstance(engine, StyleEngine):
        def work() -> object:
            with torch.inference_mode():
                return engine.decode(engine.encode_content(photos), [engine.encode_style(style)])
    else:
        def work() -> object:
            return engine.stylize(photos)  # type: ignore[attr-defined]
    return work


def _cached_rows(engine: StyleEngine, subject: Subject, *, size: int, style: torch.Tensor, repeat: int) -> Iterator[Row]:
    """Re-picking a style: the photo's features (and the style's statistics) come from a cache."""
    photo = synthetic_image(size, size).to(style.device)
    other_style = synthetic_image(STYLE_SIZE, STYLE_SIZE, seed=2).to(style.device)
    with torch.inference_mode():
        content = engine.encode_content(photo)
        stats = engine.encode_style(other_style)

    def full() -> object:
        with torch.inference_mode():
            return engine.decode(engine.encode_content(photo), [engine.encode_style(other_style)])

    def new_style() -> object:
        with torch.inference_mode():
            return engine.decode(content, [engine.encode_style(other_style)])

    def both_cached() -> object:
        with torch.inference_mode():
            return engine.decode(content, [stats])

    full_s, _ = measure(full, repeat=repeat)
    for name, work in (("re-pick, photo cached", new_style), ("re-pick, photo+style cached", both_cached)):
        seconds, peak = measure(work, repeat=repeat)
        yield Row(
            "engines",
            f"{subject.name}: {name}",
            seconds,
            peak_mb=peak,
            params={"size": size, "batch": 1, "device": str(style.device)},
            ratios={"speed-up vs uncached": full_s / seconds},
            note=subject.note,
        )
