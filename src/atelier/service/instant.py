"""Instant stylization: a photo and a style in, a picture out, in about a second.

Two entry points:

* :func:`stylize_image` -- the whole pipeline for one picture, uncached (``atelier render``).
* :class:`InstantService` -- what the web app uses: the same engines behind three caches and a
  micro-batcher.

  - **Photos** (decoded, scaled, as uint8 tensors) and **content features** (the engine's
    encoding of the photo) are cached by the photo's sha256 and size, in one LRU bounded in bytes
    (``ATELIER_INSTANT_CACHE_MB``). Re-picking a style for a photo therefore costs the decoder
    only, and so does moving the strength slider.
  - **Style statistics** (a few KiB each) are cached by the style's name or by the sha256 of an
    uploaded painting (``ATELIER_STYLE_CACHE_SIZE`` entries).
  - **Filters** have no encoder/decoder split; their full-strength picture is cached instead, so
    the strength slider is a blend with the cached photo.
  - **Micro-batching**: requests go to one model thread, which waits up to
    ``ATELIER_INSTANT_BATCH_WINDOW_MS`` for more (at most ``ATELIER_INSTANT_BATCH_MAX``) and
    paints requests of the same engine, size and strength in one model call. On a CPU this buys
    throughput by giving the convolutions bigger work items; on a GPU it buys far more. One
    thread also means requests never fight over the cores.

Departure from the AdaIN reference: ``preserve_color`` in the service keeps the photo's colours by
luminance-only transfer after painting (:func:`atelier.art.blocks.color.preserve_colors`), not by
recolouring the style before encoding (CORAL) as :func:`stylize_image` does. CORAL makes the style
statistics depend on the photo, which would defeat the style cache and the batching.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch
from PIL import Image

from atelier.art.blocks.color import preserve_colors
from atelier.service.errors import ServiceError
from atelier.art.blocks.faces import Faces
from atelier.art.blocks.images import fit_longest, to_pil, to_tensor
from atelier.art.blocks.lattice import suppress_lattice
from atelier.art.progress import Progress, ProgressCallback, no_progress
from atelier.service.engines import STYLE_ENGINES, EngineLoader
from atelier.service.faces import FacesOption, find_faces, paint_faces_finer

if TYPE_CHECKING:
    from atelier.config import Settings
    from atelier.service.context import Services
    from atelier.service.metrics import Metrics
    from atelier.service.uploads import UploadInfo

log = logging.getLogger(__name__)

#: Longest side a style image is resized to before encoding, as in the AdaIN reference
#: (``--style_size 512``): the painting's brush strokes keep a size that suits a photo.
DEFAULT_STYLE_SIZE = 512
#: The smallest photo side the engines accept (two stride-2 layers and reflection pads).
MIN_SIDE = 8
#: Calls the running average latency is taken over.
LATENCY_WINDOW = 64


class StyleChoiceError(ServiceError):
    """The style options do not fit together (e.g. weights for a single style)."""


class BusyError(ServiceError):
    """The instant service is shutting down or could not paint in time."""


@dataclass(frozen=True, slots=True)
class AdaINWeights:
    """Which AdaIN weights to use: a registry set, or the files a user passed."""

    weights: str | None = None
    vgg: object | None = None
    decoder: object | None = None


# ------------------------------------------------------------------------------------------------
# the uncached pipeline (the CLI)


def stylize_image(
    loader: EngineLoader,
    content: Image.Image,
    *,
    engine: str,
    styles: Sequence[Image.Image] = (),
    filter_name: str | None = None,
    style_weights: Sequence[float] | None = None,
    alpha: float = 1.0,
    preserve_color: bool = False,
    mask: Image.Image | None = None,
    size: int | None = None,
    style_size: int | None = None,
    adain: AdaINWeights = AdaINWeights(),
    faces: FacesOption = True,
    delattice: bool = True,
    style_cache: dict[Any, Any] | None = None,
    progress: ProgressCallback = no_progress,
) -> Image.Image:
    """Paint ``content`` with ``styles`` (arbitrary-style engines) or a named filter.

    ``size`` is the longest side of the output (default: the photo's own size). ``alpha`` is the
    strength (1 = full style, 0 = the photo). ``mask`` (white = first style, black = second)
    gives two styles to two regions, as in the AdaIN paper's Fig. 10. ``faces``: faces are
    found and painted finer (:mod:`atelier.service.faces`); not with a ``mask``, whose regions
    a face crop would cut. ``style_size`` is the longest side the paintings are scaled to;
    None ties it to the output (:func:`tied_style_size`). ``delattice``: MicroAST's fixed 4/8 px
    pattern is taken out of flat areas (:func:`atelier.art.blocks.lattice.suppress_lattice`).

    ``style_cache`` (a dict the caller keeps between calls with the same styles and options, as
    ``atelier render`` does for a folder of photos) keeps the scaled and encoded paintings, so
    only the first photo pays for them; the pictures are the same as without it.
    """
    if not 0.0 <= alpha <= 1.0:
        raise StyleChoiceError(f"strength (alpha) must be between 0 and 1, got {alpha}")
    if size is not None:
        content = fit_longest(content, size)
    steps = 3
    progress(Progress("load", 1, steps))
    if engine == "filter":
        if filter_name is None:
            raise StyleChoiceError("the filter engine needs a filter name as its style")
        net = loader.filter(filter_name)
        progress(Progress("paint", 2, steps))
        photo = to_tensor(content).to(loader.device)
        painted = net.stylize(photo, strength=1.0)
        if alpha > 0:  # alpha 0 is the photo itself: nothing to paint finer
            painted = paint_faces_finer(
                photo, painted, find_faces(content, faces), lambda x: net.stylize(x, strength=1.0)
            )
        if alpha < 1.0:  # the filters' own strength blend, after the faces (as the service caches)
            painted = torch.lerp(photo, painted, alpha)
        if preserve_color:
            painted = preserve_colors(painted, photo)
        progress(Progress("done", 3, steps))
        return to_pil(painted)

    if engine not in STYLE_ENGINES:
        raise StyleChoiceError(f"unknown engine {engine!r}")
    if not styles:
        raise StyleChoiceError(f"the {engine} engine needs at least one style image")
    weights = _normalised_weights(style_weights, len(styles))
    model = loader.style_engine(engine, weights=adain.weights, vgg=adain.vgg, decoder=adain.decoder)  # type: ignore[arg-type]
    photo = to_tensor(content).to(loader.device)
    sizes = tuple(style_size or tied_style_size(style.size, content.size) for style in styles)
    mask_tensor = _mask_tensor(mask, content.size, len(styles)) if mask is not None else None
    progress(Progress("paint", 2, steps))
    with torch.inference_mode():
        if style_cache is not None and mask_tensor is None and not preserve_color:
            # The paintings' signals do not depend on the photo here: encoded once per size.
            key = (engine, adain, sizes)
            if key not in style_cache:
                style_cache[key] = [
                    model.encode_style(to_tensor(fit_longest(style, side)).to(loader.device))
                    for style, side in zip(styles, sizes)
                ]
            signals = style_cache[key]

            def paint(x: torch.Tensor) -> torch.Tensor:
                return model.decode(_content_features(model, x, alpha), signals, style_weights=weights, alpha=alpha)

        else:
            paintings = [to_tensor(fit_longest(style, side)).to(loader.device) for style, side in zip(styles, sizes)]

            def paint(x: torch.Tensor) -> torch.Tensor:
                return model.stylize(  # type: ignore[attr-defined]
                    x, paintings, style_weights=weights, alpha=alpha, preserve_color=preserve_color,
                    mask=None if mask_tensor is None else mask_tensor.to(loader.device),
                )

        painted = paint(photo)
        if mask_tensor is None and alpha > 0:
            painted = paint_faces_finer(photo, painted, find_faces(content, faces), paint)
        if delattice and engine == "microast":
            painted = suppress_lattice(painted, photo)
    progress(Progress("done", 3, steps))
    return to_pil(painted)


def _content_features(model: Any, photo: torch.Tensor, alpha: float) -> Any:
    # MicroAST's photo encoding also encodes the photo as a style (the alpha < 1 end); at full
    # strength nothing reads it, so it is skipped (as MicroAST.stylize does).
    if alpha >= 1.0:
        try:
            return model.encode_content(photo, own_style=False)
        except TypeError:  # an engine without the option (AdaIN has no such part)
            pass
    return model.encode_content(photo)


def tied_style_size(painting: tuple[int, int], output: tuple[int, int]) -> int:
    """The longest side to scale a painting to for an output of ``output`` (width, height):
    the output's longest side, but at least :data:`DEFAULT_STYLE_SIZE` (the AdaIN reference's
    size, right for outputs about that big) and, above that, never more than the painting's
    own (the official MicroAST code feeds the style at its full size for any output)."""
    return max(DEFAULT_STYLE_SIZE, min(max(painting), max(output)))


def _normalised_weights(weights: Sequence[float] | None, count: int) -> list[float] | None:
    if weights is None:
        return None
    weights = list(weights)
    if len(weights) != count:
        raise StyleChoiceError(
            f"{len(weights)} style weights were given for {count} style images; give one per style"
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise StyleChoiceError("style weights must be zero or more, and not all zero")
    total = sum(weights)
    return [w / total for w in weights]


def _mask_tensor(mask: Image.Image, size: tuple[int, int], styles: int) -> torch.Tensor:
    if styles != 2:
        raise StyleChoiceError(
            f"a mask gives two styles to two regions: give exactly two --style (got {styles})"
        )
    grey = mask.convert("L").resize(size, Image.Resampling.BILINEAR)
    weight = to_tensor(grey.convert("RGB"))[:, :1]
    # One channel per style (first style where white), the form every engine takes.
    return torch.cat([weight, 1.0 - weight], dim=1)


# ------------------------------------------------------------------------------------------------
# caches


def nbytes(value: Any) -> int:
    """Bytes held by the tensors in ``value`` (a tensor, a dataclass of them, or a sequence)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, Faces):  # a few boxes: counted so the byte budget still bounds them
        return 64 * (1 + len(value.faces) + len(value.eyes))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


class LRUCache:
    """A thread-safe least-recently-used cache bounded by a cost (bytes, or 1 per entry).

    ``name`` labels the hit/miss counters in the metrics.
    """

    def __init__(
        self,
        capacity: int,
        *,
        cost: Callable[[Any], int] = lambda _value: 1,
        name: str = "cache",
        metrics: Metrics | None = None,
    ) -> None:
        self.capacity = capacity
        self.name = name
        self._cost = cost
        self._metrics = metrics
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
                self._items.move_to_end(key)
        if self._metrics is not None:
            self._metrics.cache_requests.labels(self.name, "miss" if found is None else "hit").inc()
        return None if found is None else found[0]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key: Hashable, value: Any) -> None:
        cost = self._cost(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._used -= old[1]
            if cost > self.capacity:
                return  # bigger than the whole cache: keeping it would evict everything else
            self._items[key] = (value, cost)
            self._used += cost
            while self._used > self.capacity and self._items:
                _, (_, dropped) = self._items.popitem(last=False)
                self._used -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._used = 0

    @property
    def used(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self), "used": self._used, "capacity": self.capacity, "hits": self.hits, "misses": self.misses}


# ------------------------------------------------------------------------------------------------
# micro-batching

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: Future[R]


_STOP = object()


class MicroBatcher(Generic[T, R]):
    """Runs ``run(items)`` on one thread with items collected into batches.

    The thread takes the first waiting item, then waits up to ``window_s`` for more, at most
    ``max_batch`` in all and at most ``max_cost`` of ``cost(item)`` summed (an item that would
    pass it starts the next batch; one item alone may pass it), and calls ``run`` with them.
    ``run`` returns one result per item, in order; a result that is an exception is raised to
    that item's caller alone. Items that arrive while a batch runs wait for the next one, so
    under load batches fill without waiting.
    """

    def __init__(
        self,
        run: Callable[[list[T]], list[R | BaseException]],
        *,
        window_s: float,
        max_batch: int,
        cost: Callable[[T], float] | None = None,
        max_cost: float = float("inf"),
        coming: Callable[[], int] | None = None,
        name: str = "micro-batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        self.window_s = max(0.0, window_s)
        self.max_batch = max_batch
        self._cost = cost or (lambda item: 0.0)
        self.max_cost = max_cost
        self._held: _Pending[T, R] | None = None  # taken from the queue, but over the last batch's budget
        # How many items are on their way (submitted or about to be); None: always wait the window.
        self._coming = coming
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        self.batches: deque[int] = deque(maxlen=1000)  # recent batch sizes, for stats and tests

    def submit(self, item: T) -> Future[R]:
        future: Future[R] = Future()
        with self._lock:
            if self._closed:
                raise BusyError("the service is shutting down; try again in a moment")
            self._queue.put(_Pending(item, future))
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Finish what was submitted, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _collect(self, first: _Pending[T, R]) -> tuple[list[_Pending[T, R]], bool]:
        batch = [first]
        spent = self._cost(first.item)
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if self._coming is not None and self._coming() <= len(batch) and self._queue.empty():
                remaining = 0.0  # nobody else is on the way: a lone caller does not wait for company
            try:
                nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                return batch, True
            cost = self._cost(nxt.item)
            if spent + cost > self.max_cost:
                self._held = nxt  # first of the next batch, ahead of everything still queued
                break
            batch.append(nxt)
            spent += cost
        return batch, False

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            if self._held is not None:
                first, self._held = self._held, None
            else:
                first = self._queue.get()
            if first is _STOP:
                break
            batch, stopping = self._collect(first)
            live = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if not live:
                continue
            self.batches.append(len(live))
            try:
                results = self._run([p.item for p in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
                results = [exc] * len(live)
            for pending, result in zip(live, results):
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
        # Anything submitted before close() but not yet taken: paint it too.
        while True:
            try:
                rest = self._queue.get_nowait()
            except queue.Empty:
                break
            if rest is not _STOP and rest.future.set_running_or_notify_cancel():
                try:
                    rest.future.set_result(self._run([rest.item])[0])
                except BaseException as exc:  # noqa: BLE001
                    rest.future.set_exception(exc)


# ------------------------------------------------------------------------------------------------
# the service


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
                        lambda x, s=signals: model.decode(model.encode_content(x), s, alpha=alpha, style_weights=weights),
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


def stack(items: Sequence[Any]) -> Any:
    """Concatenate encoded batches along the batch dimension.

    Works on the engines' cache objects (dataclasses of tensors, nested) without knowing them:
    tensor fields are concatenated, other fields must be equal (the size of the photos).
    """
    first = items[0]
    if len(items) == 1:
        return first
    if isinstance(first, torch.Tensor):
        return torch.cat(list(items), dim=0)
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        values = {f.name: stack([getattr(item, f.name) for item in items]) for f in dataclasses.fields(first) if f.init}
        return type(first)(**values)
    if any(item != first for item in items[1:]):
        raise ValueError(f"cannot batch items that differ in {first!r}")
    return first


def unstack(batch: Any, count: int) -> list[Any]:
    """Split an encoded batch of ``count`` into encoded batches of one (the inverse of
    :func:`stack`): tensor fields are sliced along the batch dimension, others shared."""
    if count == 1:
        return [batch]
    if isinstance(batch, torch.Tensor):
        if batch.shape[0] != count:
            raise ValueError(f"a batch of {batch.shape[0]} cannot be split into {count}")
        return [batch[i : i + 1] for i in range(count)]
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        fields = [f.name for f in dataclasses.fields(batch) if f.init]
        parts = {name: unstack(getattr(batch, name), count) for name in fields}
        return [type(batch)(**{name: parts[name][i] for name in fields}) for i in range(count)]
    return [batch] * count


def _rgb_array(image: Image.Image) -> Any:
    import numpy as np

    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _to_uint8(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().clamp(0, 1).mul(255).round_().to("cpu", torch.uint8)


# ------------------------------------------------------------------------------------------------
# from uploads and catalog names to what the service paints


class UnknownStyleError(StyleChoiceError):
    """A style name that is neither a filter nor a catalog style."""


def photo_ref(services: Services, upload: UploadInfo, image: Image.Image | None = None) -> PhotoRef:
    """The photo of an upload; ``image`` is its decoded picture when the caller has it."""
    from atelier.service.uploads import UploadError, load_image

    if upload.kind != "content" and upload.kind != "style":
        raise UploadError("this upload is not a photo")
    if upload.width is None or upload.height is None or not upload.sha256:
        raise UploadError("this upload has not been confirmed yet")

    def load() -> Image.Image:
        return image if image is not None else load_image(services, upload)

    return PhotoRef(key=upload.sha256, width=upload.width, height=upload.height, load=load)


def style_ref(
    services: Services,
    *,
    name: str | None = None,
    upload: UploadInfo | None = None,
    image: Image.Image | None = None,
) -> StyleRef:
    """A style by catalog or filter ``name``, or the painting of an ``upload``."""
    from atelier.service.uploads import load_image

    if name:
        entry = services.catalog.get(name)
        if entry is None:
            raise UnknownStyleError(f"unknown style {name!r}; GET /api/v1/styles lists them")
        if entry.kind == "filter":
            return StyleRef.of_filter(entry.name)
        return StyleRef(key=f"name:{entry.name}", load=entry.load_image)
    if upload is None:
        raise StyleChoiceError("choose a style: a style name, or your own painting")
    if not upload.sha256:
        raise StyleChoiceError("this painting has not been confirmed yet")

    def load() -> Image.Image:
        return image if image is not None else load_image(services, upload)

    return StyleRef(key=f"sha256:{upload.sha256}", load=load)
