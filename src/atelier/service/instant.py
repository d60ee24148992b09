"""Instant stylization for the web app: a photo and a style in, a picture out, in about a
second -- the instant engines behind three caches and a micro-batcher. (``atelier render``
paints one picture uncached: :mod:`atelier.service.stylize`.)

- **Photos** (decoded, scaled, as uint8 tensors) and **content features** (the engine's
  encoding of the photo) are cached by the photo's sha256 and size, in one LRU bounded in bytes
  (``ATELIER_INSTANT_CACHE_MB``). Re-picking a style for a photo therefore costs the decoder
  only, and so does moving the strength slider.
- **Style statistics** (a few KiB each) are cached by the style's name or by the sha256 of an
  uploaded painting (``ATELIER_STYLE_CACHE_SIZE`` entries).
- **Filters** have no encoder/decoder split; their full-strength picture is cached instead, so
  the strength slider is a blend with the cached photo.
- **Micro-batching** (:mod:`atelier.service.batcher`): requests go to one model thread, which
  waits up to ``ATELIER_INSTANT_BATCH_WINDOW_MS`` for more (at most
  ``ATELIER_INSTANT_BATCH_MAX``) and paints requests of the same engine, size and strength in
  one model call. On a CPU this buys throughput by giving the convolutions bigger work items; on
  a GPU it buys far more. One thread also means requests never fight over the cores.

Departure from the AdaIN reference: ``preserve_color`` here keeps the photo's colours by
luminance-only transfer after painting (:func:`atelier.art.blocks.color.preserve_colors`), not by
recolouring the style before encoding (CORAL) as :mod:`atelier.service.stylize` does. CORAL makes
the style statistics depend on the photo, which would defeat the style cache and the batching.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from atelier.art.blocks.color import preserve_colors
from atelier.art.blocks.faces import Faces
from atelier.art.blocks.images import fit_longest, to_pil, to_tensor
from atelier.art.blocks.lattice import suppress_lattice
from atelier.art.engines.protocol import paint
from atelier.service.batcher import MicroBatcher
from atelier.service.encodings import nbytes, stack, unstack
from atelier.service.engines import STYLE_ENGINES, EngineLoader
from atelier.service.errors import BusyError, StyleChoiceError
from atelier.service.faces import find_faces, paint_faces_finer
from atelier.service.lru import LRUCache
from atelier.service.refs import PhotoRef, StyleRef
from atelier.service.stylize import DEFAULT_STYLE_SIZE

if TYPE_CHECKING:
    from atelier.config import Settings
    from atelier.service.metrics import Metrics

log = logging.getLogger(__name__)

#: The smallest photo side the engines accept (two stride-2 layers and reflection pads).
MIN_SIDE = 8
#: Calls the running average latency is taken over.
LATENCY_WINDOW = 64


@dataclass
class _Request:
    engine: str  # "filter", "microast" or "adain"
    photo: PhotoRef
    style: StyleRef
    alpha: float
    preserve_color: bool
    height: int
    width: int
    photo_tensor: torch.Tensor | None  # uint8 (1, 3, H, W) when the caller already had it
    submitted: float

    def group(self) -> tuple[Any, ...]:
        # Filters ignore alpha inside the model (they blend afterwards); the style engines take
        # one alpha per call.
        if self.engine == "filter":
            return ("filter", self.style.filter, self.height, self.width)
        return (self.engine, self.height, self.width, self.alpha)


@dataclass(frozen=True)
class StylizeResult:
    """A painted picture and how it was made."""

    image: Image.Image
    seconds: float
    batch_size: int
    content_cached: bool
    style_cached: bool
    #: The painting itself came from the cache (a filter's picture painted earlier): the
    #: seconds are the blend's, not a painting's.
    result_cached: bool = False


def fit_dims(width: int, height: int, longest: int) -> tuple[int, int]:
    """(width, height) scaled so the longest side is ``longest``, as :func:`fit_longest` does."""
    scale = longest / max(width, height)
    if width >= height:
        return longest, max(1, round(height * scale))
    return max(1, round(width * scale)), longest


class InstantService:
    """Instant stylization with caches and micro-batching. Thread-safe; one per process.

    Call :meth:`stylize` from any thread (it blocks until the picture is painted); close the
    service at the end to stop its model thread.
    """

    def __init__(
        self,
        loader: EngineLoader,
        *,
        max_size: int = 1024,
        batch_window_ms: float = 15.0,
        batch_max: int = 8,
        batch_max_pixels: int = 1024 * 1024,
        cache_bytes: int = 512 * 1024 * 1024,
        style_cache_size: int = 256,
        style_size: int = DEFAULT_STYLE_SIZE,
        metrics: Metrics | None = None,
        faces: bool = True,
    ) -> None:
        self.loader = loader
        self.max_size = max_size
        #: Faces found (once per photo and size, cached with the photo) and painted finer by
        #: the arbitrary-style engines, as atelier render does.
        self.faces = faces
        self.style_size = style_size
        self.metrics = metrics
        # Photos, content features and full-strength filter pictures share one byte budget.
        self.cache = LRUCache(cache_bytes, cost=nbytes, name="content", metrics=metrics)
        self.styles = LRUCache(style_cache_size, name="style", metrics=metrics)
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.calls = 0
        self._active = 0  # calls inside stylize(): decoding their photo, queued or being painted
        self._stats_lock = threading.Lock()
        # A pixel budget besides the count: past about a megapixel a CPU batch runs slower per
        # image (cache-bound), e.g. MicroAST at 512x512 on 2 cores: 6.3 images/s alone, 8.9 in
        # fours, 4.8 in eights (`atelier bench engines --batches 1,4,8`).
        self._batcher: MicroBatcher[_Request, StylizeResult] = MicroBatcher(
            self._run_batch,
            window_s=batch_window_ms / 1000.0,
            max_batch=batch_max,
            cost=lambda request: float(request.width * request.height),
            max_cost=float(batch_max_pixels) if batch_max_pixels > 0 else float("inf"),
            coming=lambda: self._active,
            name="instant-model",
        )

    @classmethod
    def from_settings(cls, loader: EngineLoader, settings: Settings, *, metrics: Metrics | None = None) -> InstantService:
        return cls(
            loader,
            max_size=settings.instant_max_size,
            batch_window_ms=settings.instant_batch_window_ms,
            batch_max=settings.instant_batch_max,
            batch_max_pixels=settings.instant_batch_max_pixels,
            cache_bytes=settings.instant_cache_mb * 1024 * 1024,
            style_cache_size=settings.style_cache_size,
            metrics=metrics,
        )

    @property
    def batch_window_ms(self) -> float:
        return self._batcher.window_s * 1000.0

    @property
    def batch_max(self) -> int:
        return self._batcher.max_batch

    def close(self) -> None:
        self._batcher.close()

    # -- the call ------------------------------------------------------------------------------

    def output_size(self, photo: PhotoRef, size: int | None) -> tuple[int, int]:
        """(width, height) of the picture for ``photo`` at ``size`` (capped to the maximum)."""
        longest = max(photo.width, photo.height)
        target = min(size or longest, self.max_size)
        width, height = fit_dims(photo.width, photo.height, target)
        if min(width, height) < MIN_SIDE:
            raise StyleChoiceError(
                f"the picture would be {width}x{height} pixels; it must be at least "
                f"{MIN_SIDE} pixels on each side (send a bigger photo or a bigger size)"
            )
        return width, height

    def stylize(
        self,
        photo: PhotoRef,
        style: StyleRef,
        *,
        engine: str = "microast",
        alpha: float = 1.0,
        size: int | None = None,
        preserve_color: bool = False,
        timeout: float | None = 120.0,
    ) -> StylizeResult:
        """Paint ``photo`` in ``style``; blocks until done. ``size`` is the longest side of the
        result (default: the photo's, at most ``max_size``); ``alpha`` the strength 0..1."""
        if not 0.0 <= alpha <= 1.0:
            raise StyleChoiceError(f"the strength (alpha) must be between 0 and 1, got {alpha}")
        if size is not None and size < MIN_SIDE:
            raise StyleChoiceError(f"size must be at least {MIN_SIDE} pixels, got {size}")
        if style.filter is not None:
            engine = "filter"
        elif engine not in STYLE_ENGINES:
            raise StyleChoiceError(f"unknown engine {engine!r}; choose one of {', '.join(STYLE_ENGINES)}")
        elif style.load is None:
            raise StyleChoiceError("this style has no painting to learn from")
        width, height = self.output_size(photo, size)
        started = time.perf_counter()
        with self._on_the_way():
            # Decode in the caller's thread when the photo is not cached, so the model thread
            # spends its time on the model.
            photo_tensor = None
            if ("photo", photo.key, height, width) not in self.cache:
                photo_tensor = self._prepare_photo(photo, width, height)
            request = _Request(
                engine=engine,
                photo=photo,
                style=style,
                alpha=float(alpha),
                preserve_color=preserve_color,
                height=height,
                width=width,
                photo_tensor=photo_tensor,
                submitted=started,
            )
            future = self._batcher.submit(request)
            try:
                result = future.result(timeout=timeout)
            except TimeoutError:
                future.cancel()
                raise BusyError("painting took too long; the server is busy, try again in a moment") from None
        seconds = time.perf_counter() - started
        self._record(engine, seconds, width, height, result)
        return dataclasses.replace(result, seconds=seconds)

    @contextmanager
    def _on_the_way(self) -> Iterator[None]:
        """Counts a call from its photo's decoding to its result: the model thread waits for
        company (the batch window) only while other calls are on their way."""
        with self._stats_lock:
            self._active += 1
        try:
            yield
        finally:
            with self._stats_lock:
                self._active -= 1

    def _record(self, engine: str, seconds: float, width: int, height: int, result: StylizeResult) -> None:
        with self._stats_lock:
            self.latencies.append(seconds)
            self.calls += 1
            mean = statistics.fmean(self.latencies)
            count = len(self.latencies)
        if self.metrics is not None:
            self.metrics.stylize_seconds.labels(engine).observe(seconds)
        log.info(
            "stylize %s %dx%d in %.0f ms (batch of %d%s); mean of the last %d: %.0f ms",
            engine,
            width,
            height,
            seconds * 1000,
            result.batch_size,
            ", photo cached" if result.content_cached else "",
            count,
            mean * 1000,
        )

    def stats(self) -> dict[str, Any]:
        """Latency of the last calls, caches and batching, for /api/v1/stats."""
        with self._stats_lock:
            recent = list(self.latencies)
            calls = self.calls
        batches = list(self._batcher.batches)
        return {
            "calls": calls,
            "latency_ms": {
                "window": len(recent),
                "mean": round(statistics.fmean(recent) * 1000, 1) if recent else None,
                "p50": round(statistics.median(recent) * 1000, 1) if recent else None,
                "max": round(max(recent) * 1000, 1) if recent else None,
            },
            "batches": {
                "window_ms": self.batch_window_ms,
                "max": self.batch_max,
                "recent": len(batches),
                "mean_size": round(statistics.fmean(batches), 2) if batches else None,
            },
            "cache": {"content": self.cache.stats(), "style": self.styles.stats()},
        }

    # -- inside the model thread ------------------------------------------------------------------

    def _prepare_photo(self, photo: PhotoRef, width: int, height: int) -> torch.Tensor:
        image = photo.load()
        if image.size != (photo.width, photo.height):
            log.warning("photo %s is %s, not the %sx%s it was said to be", photo.key[:12], image.size, photo.width, photo.height)
        if image.size != (width, height):
            image = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        array = torch.from_numpy(_rgb_array(image))
        return array.permute(2, 0, 1).unsqueeze(0).contiguous()

    def _photo(self, request: _Request) -> tuple[torch.Tensor, bool]:
        """The photo as uint8 (1, 3, H, W) on the CPU, from the cache, the request or its file;
        and whether the cache had it."""
        key = ("photo", request.photo.key, request.height, request.width)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        tensor = request.photo_tensor
        if tensor is None:  # evicted since the caller looked
            tensor = self._prepare_photo(request.photo, request.width, request.height)
        self.cache.put(key, tensor)
        return tensor, False

    def _run_batch(self, requests: list[_Request]) -> list[StylizeResult | BaseException]:
        results: list[StylizeResult | BaseException] = [RuntimeError("not painted")] * len(requests)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.group(), []).append(index)
        for indices in groups.values():
            members = [requests[i] for i in indices]
            try:
                painted = self._paint_group(members)
            except Exception as exc:  # noqa: BLE001
                if len(members) == 1:
                    painted = [exc]
                else:
                    # Paint them one by one, so one bad request does not fail its neighbours.
                    log.warning("a batch of %d failed (%s); painting them one by one", len(members), exc)
                    painted = []
                    for member in members:
                        try:
                            painted.extend(self._paint_group([member]))
                        except Exception as one:  # noqa: BLE001
                            painted.append(one)
            for i, outcome in zip(indices, painted):
                results[i] = outcome
        return results

    def _paint_group(self, members: list[_Request]) -> list[StylizeResult | BaseException]:
        if members[0].engine == "filter":
            return self._paint_filter(members)
        return self._paint_style(members)

    def _observe(self, engine: str, step: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.model_seconds.labels(engine, step).observe(time.perf_counter() - started)

    def _paint_filter(self, members: list[_Request]) -> list[StylizeResult | BaseException]:
        name = members[0].style.filter
        assert name is not None
        net = self.loader.filter(name)
        device = self.loader.device
        found = [self._photo(m) for m in members]
        photos = [tensor for tensor, _ in found]
        full: list[torch.Tensor | None] = []
        missing: list[int] = []
        for i, m in enumerate(members):
            hit = self.cache.get(("filter", name, m.photo.key, m.height, m.width))
            full.append(hit)
            if hit is None:
                missing.append(i)
        if missing:
            started = time.perf_counter()
            batch = torch.cat([photos[i] for i in missing]).to(device).float().div_(255.0)
            painted = net.stylize(batch, strength=1.0)
            self._observe("filter", "stylize", started)
            if self.metrics is not None:
                self.metrics.batch_size.labels("filter").observe(len(missing))
            for j, i in enumerate(missing):
                one = painted[j : j + 1]
                faces = self._faces(members[i])
                if faces is not None:
                    one = paint_faces_finer(batch[j : j + 1], one, faces, lambda x: net.stylize(x, strength=1.0))
                as_bytes = _to_uint8(one)
                self.cache.put(("filter", name, members[i].photo.key, members[i].height, members[i].width), as_bytes)
                full[i] = as_bytes
        out: list[StylizeResult | BaseException] = []
        for i, m in enumerate(members):
            photo = photos[i].float().div(255.0)
            result = full[i].float().div(255.0)  # type: ignore[union-attr]
            if m.alpha < 1.0:
                result = torch.lerp(photo, result, m.alpha)
            if m.preserve_color:
                result = preserve_colors(result, photo)
            out.append(
                StylizeResult(
                    image=to_pil(result),
                    seconds=0.0,
                    batch_size=len(missing) or 1,
                    content_cached=found[i][1],
                    style_cached=True,
                    result_cached=i not in missing,
                )
            )
        return out

    def _paint_style(self, members: list[_Request]) -> list[StylizeResult | BaseException]:
        engine_name = members[0].engine
        model = self.loader.style_engine(engine_name)
        device = self.loader.device
        contents: list[Any] = []
        content_hits: list[bool] = []
        missing: dict[str, list[int]] = {}  # photo key -> members needing it encoded
        for i, m in enumerate(members):
            features = self.cache.get(("features", engine_name, m.photo.key, m.height, m.width))
            content_hits.append(features is not None)
            contents.append(features)
            if features is None:
                missing.setdefault(m.photo.key, []).append(i)
        if missing:
            # The photos not cached yet are encoded together too (they share a size: the group
            # is by shape), then cached one by one.
            started = time.perf_counter()
            firsts = [indices[0] for indices in missing.values()]
            photos = torch.cat([self._photo(members[i])[0] for i in firsts]).to(device).float().div_(255.0)
            encoded = unstack(model.encode_content(photos), len(firsts))
            self._observe(engine_name, "encode_content", started)
            for features, indices in zip(encoded, missing.values()):
                m = members[indices[0]]
                self.cache.put(("features", engine_name, m.photo.key, m.height, m.width), features)
                for i in indices:
                    contents[i] = features
        styles: list[list[Any]] = []
        style_hits: list[bool] = []
        for m in members:
            found = [self._style(model, engine_name, part) for part in (m.style.parts or (m.style,))]
            styles.append([encoded for encoded, _ in found])
            style_hits.append(all(hit for _, hit in found))
        # One decoder call per distinct style: the engines take one style list per batch.
        by_style: dict[str, list[int]] = {}
        for i, m in enumerate(members):
            by_style.setdefault(m.style.key, []).append(i)
        out: list[StylizeResult | BaseException] = [RuntimeError("not painted")] * len(members)
        alpha = members[0].alpha
        for indices in by_style.values():
            started = time.perf_counter()
            batch = stack([contents[i] for i in indices])
            weights = list(members[indices[0]].style.weights) or None
            painted = model.decode(batch, styles[indices[0]], alpha=alpha, style_weights=weights)
            self._observe(engine_name, "decode", started)
            if self.metrics is not None:
                self.metrics.batch_size.labels(engine_name).observe(len(indices))
            for j, i in enumerate(indices):
                result = painted[j : j + 1]
                photo = None
                faces = self._faces(members[i]) if alpha > 0 else None
                if faces is not None:
                    photo = self._photo(members[i])[0].to(result.device).float().div_(255.0)
                    signals = styles[indices[0]]
                    result = paint_faces_finer(
                        photo, result, faces,
                        lambda x, s=signals: paint(model, x, s, alpha=alpha, style_weights=weights),
                    )
                if engine_name == "microast":  # as stylize_image: the 4/8 px lattice out of flat areas
                    if photo is None:
                        photo = self._photo(members[i])[0].to(result.device).float().div_(255.0)
                    result = suppress_lattice(result, photo)
                if members[i].preserve_color:
                    if photo is None:
                        photo = self._photo(members[i])[0].to(result.device).float().div_(255.0)
                    result = preserve_colors(result, photo)
                out[i] = StylizeResult(
                    image=to_pil(result),
                    seconds=0.0,
                    batch_size=len(indices),
                    content_cached=content_hits[i],
                    style_cached=style_hits[i],
                )
        return out

    def _faces(self, request: _Request) -> Faces | None:
        """The faces of the request's photo (cached with it), or None (off, none, no detector)."""
        if not self.faces:
            return None
        key = ("faces", request.photo.key, request.height, request.width)
        found = self.cache.get(key)
        if found is None:
            found = find_faces(self._photo(request)[0][0].float().div(255.0)) or Faces(request.width, request.height)
            self.cache.put(key, found)
        return found or None

    def _style(self, model: Any, engine_name: str, style: StyleRef) -> tuple[Any, bool]:
        key = (engine_name, style.key, self.style_size)
        encoded = self.styles.get(key)
        if encoded is not None:
            return encoded, True
        assert style.load is not None
        started = time.perf_counter()
        painting = fit_longest(style.load().convert("RGB"), self.style_size)
        encoded = model.encode_style(to_tensor(painting).to(self.loader.device))
        self._observe(engine_name, "encode_style", started)
        self.styles.put(key, encoded)
        return encoded, False


def _rgb_array(image: Image.Image) -> Any:
    import numpy as np

    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _to_uint8(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().clamp(0, 1).mul(255).round_().to("cpu", torch.uint8)


