"""Loading the engines the product uses, from the model registry, once per process.

The CLI and the web app ask for an engine by name; this module finds its weights in the models
folder (refusing with the command that installs them when they are missing), loads them on the
chosen device and keeps them for the next call. It also names the engines and chooses one for
``atelier render``'s ``--engine auto``. Importing it imports no torch (the engines are loaded
inside the calls), so the CLI's help can list the names.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from atelier.install import models
from atelier.service.errors import ServiceError, StyleChoiceError

if TYPE_CHECKING:
    import torch

    from atelier.art.engines.filters import FilterNet
    from atelier.art.engines.protocol import StyleEngine

log = logging.getLogger(__name__)

#: Engines that paint with any style image.
STYLE_ENGINES: tuple[str, ...] = ("microast", "adain")
#: Every instant engine name ``atelier render --engine`` accepts.
ENGINES: tuple[str, ...] = (*STYLE_ENGINES, "filter")
#: The slow, optimising engine (atelier.service.painting); ``--engine gatys`` or a catalog style's.
PAINTING_ENGINES: tuple[str, ...] = ("gatys",)

#: AdaIN weight sets: the official relu4_1 pair, or the Universal Style Transfer encoder and
#: inverter pairs at shallower levels (relu3_1 is the deepest that is installed on a machine
#: without the official files).
ADAIN_WEIGHTS: tuple[str, ...] = ("adain", "ust-conv3_1", "ust-conv2_1", "ust-conv1_1")


class UnknownEngineError(ServiceError):
    """An engine or filter name that does not exist."""


@dataclass
class EngineLoader:
    """Loads engines on demand and keeps them; safe to share between threads."""

    models_dir: Path
    device: torch.device = field(default_factory=lambda: _auto_device())
    #: Autocast on CUDA (``ATELIER_PRECISION``): auto, fp32, fp16 or bf16. No effect on the CPU.
    precision: str = field(default_factory=lambda: _default_precision())
    _cache: dict[tuple[str, ...], object] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def style_engine(
        self,
        name: str,
        *,
        weights: str | None = None,
        vgg: Path | None = None,
        decoder: Path | None = None,
    ) -> StyleEngine:
        """An arbitrary-style engine: ``microast`` or ``adain``.

        For AdaIN, ``weights`` names a registry set (default: the official ``adain``); ``vgg`` and
        ``decoder`` point at other files instead (a decoder the user trained, say).
        """
        if name == "microast":
            return self._cached(("microast",), lambda: self._on_device(self._load_microast(), "microast"))
        if name == "adain":
            if vgg is not None or decoder is not None:
                return self._cached(
                    ("adain-files", str(vgg), str(decoder)),
                    lambda: self._on_device(self._load_adain_files(vgg, decoder), "adain"),
                )
            weights = weights or "adain"
            if weights not in ADAIN_WEIGHTS:
                raise UnknownEngineError(
                    f"unknown AdaIN weights {weights!r}; choose one of {', '.join(ADAIN_WEIGHTS)}"
                )
            return self._cached(("adain", weights), lambda: self._on_device(self._load_adain_set(weights), "adain"))
        raise UnknownEngineError(
            f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}"
        )

    def filter(self, name: str) -> FilterNet:
        """One of the fixed-style filters (candy, mosaic, rain_princess, udnie, pointilism)."""
        from atelier.art.engines.filters import FILTERS

        key = filter_name(name)
        if key is None:
            raise UnknownEngineError(f"unknown filter {name!r}; choose one of {', '.join(FILTERS)}")
        return self._cached(("filter", key), lambda: self._on_device(self._load_filter(key), "filter"))

    # -- loading ---------------------------------------------------------------------------

    def _cached(self, key: tuple[str, ...], load):  # type: ignore[no-untyped-def]
        with self._lock:
            if key not in self._cache:
                log.info("loading %s on %s", "/".join(key), self.device)
                self._cache[key] = load()
            return self._cache[key]

    def _on_device(self, engine, name: str):  # type: ignore[no-untyped-def]
        from atelier.art.blocks.devices import with_precision

        # On CUDA, half-precision autocast where ATELIER_PRECISION (auto: where it is safe) says.
        return with_precision(engine, self.device, self.precision, name=name)

    def _load_microast(self) -> StyleEngine:
        from atelier.art.engines.microast import load_microast

        paths = models.require("microast", models_dir=self.models_dir)
        return load_microast(**paths, device=self.device)

    def _load_adain_set(self, weights: str) -> StyleEngine:
        from atelier.art.engines.adain import load_adain

        paths = models.require(weights, models_dir=self.models_dir)
        if weights == "adain":
            return load_adain(vgg=paths["vgg"], decoder=paths["decoder"], device=self.device)
        return load_adain(vgg=paths["encoder"], decoder=paths["decoder"], device=self.device)

    def _load_adain_files(self, vgg: Path | None, decoder: Path | None) -> StyleEngine:
        from atelier.art.engines.adain import load_adain

        official = models.require("adain", models_dir=self.models_dir) if vgg is None or decoder is None else {}
        vgg_path = vgg or official["vgg"]
        decoder_path = decoder or official["decoder"]
        for path in (vgg_path, decoder_path):
            if not Path(path).is_file():
                raise FileNotFoundError(2, "No such file", str(path))
            if models.check_known(Path(path)) is None:
                log.warning(
                    "%s is not one of the pinned official weight files; using it as given", path
                )
        return load_adain(vgg=vgg_path, decoder=decoder_path, device=self.device)

    def _load_filter(self, name: str) -> FilterNet:
        from atelier.art.engines.filters import load_filter

        paths = models.require(f"filter-{name}", models_dir=self.models_dir)
        return load_filter(paths["weights"], device=self.device)


def _auto_device() -> torch.device:
    from atelier.art.blocks.devices import resolve_device

    return resolve_device("auto")


def _default_precision() -> str:
    from atelier.config import get_settings

    return get_settings().precision


def filter_name(name: str) -> str | None:
    """The canonical filter name for what a user typed (``rain-princess`` -> ``rain_princess``)."""
    from atelier.art.engines.filters import FILTERS

    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key.startswith("filter_"):
        key = key[len("filter_") :]
    return key if key in FILTERS else None


def choose_engine(engine: str, styles: Sequence[str]) -> str:
    """The instant engine that paints ``styles`` (paintings' paths or a filter name) when asked
    for ``engine``: ``auto`` is the filter for a single filter name that names no file, MicroAST
    otherwise."""
    engine = engine.lower()
    if engine not in (*ENGINES, "auto"):
        raise UnknownEngineError(f"unknown engine {engine!r}; choose one of auto, {', '.join(ENGINES)}")
    if not styles:
        raise StyleChoiceError("give a style: a painting (a picture file) or the name of a filter")
    if engine == "auto":
        single_filter = len(styles) == 1 and filter_name(styles[0]) is not None and not Path(styles[0]).exists()
        return "filter" if single_filter else "microast"
    return engine
