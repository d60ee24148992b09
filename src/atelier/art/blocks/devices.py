"""Choosing the torch device an engine runs on, and how it runs there.

On a CUDA GPU: cuDNN autotuning (``cudnn.benchmark``: the first call of each shape tries the
convolution algorithms and keeps the fastest; the engines see few distinct shapes), TF32
matmuls and convolutions, and autocast to half precision for the engines where it is safe
(:func:`autocast_dtype`). On the CPU none of this applies: float32 throughout, since torch's CPU
build runs half-precision convolutions on a slow generic path.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch

from atelier.art.errors import DeviceError

#: What ``ATELIER_PRECISION`` / ``precision=`` accept.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")

#: ``precision="auto"`` on CUDA, by engine name. fp16 where every activation stays far inside
#: its range and the statistics are taken in float32 or float64 (AdaIN, MicroAST: inputs in
#: 0..1); fp32 for the filters, whose activations (inputs in 0..255) squared in their instance
#: norms would overflow fp16's 65504, and which bf16 visibly changes. Measured with CPU bf16
#: autocast (same 8-bit mantissa as on a GPU), PSNR against fp32 at 320x256: filter 22 dB,
#: MicroAST 40 dB, AdaIN 54 dB; fp16 keeps 3 more bits. tests/art/blocks/test_devices.py checks each
#: automatic choice against fp32 (>= 40 dB) when a GPU is present.
AUTO_PRECISION: dict[str, str] = {"adain": "fp16", "microast": "fp16", "filter": "fp32"}

#: Video frames per batch, and the most pixels in one batch, by device type: a GPU is fed
#: bigger batches (its memory, not the CPU caches, bounds them).
VIDEO_BATCH: dict[str, tuple[int, int]] = {"cpu": (4, 1_000_000), "cuda": (16, 16_000_000)}

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when a GPU is usable, else the CPU; ``cuda`` without a GPU is refused.

    A CUDA device comes back with cuDNN autotuning and TF32 switched on (see :func:`tune_cuda`).
    """
    if isinstance(name, torch.device):
        if name.type == "cuda":
            tune_cuda()
        return name
    name = name.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                "device 'cuda' was asked for but no CUDA GPU is available "
                "(use --device cpu, or install a CUDA build of PyTorch)"
            )
        tune_cuda()
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"unknown device {name!r}: use auto, cpu or cuda")


def tune_cuda() -> None:
    """Process-wide CUDA settings for inference: cuDNN picks the fastest algorithm per shape
    (worth it: a painting job repeats its shapes), TF32 on tensor cores for fp32 work."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True


def autocast_dtype(device: torch.device | str, precision: str = "auto", *, engine: str = "") -> torch.dtype | None:
    """The half type to autocast ``engine`` to on ``device``, or None for plain float32.

    Always None on the CPU. ``auto`` follows :data:`AUTO_PRECISION` (fp32 for engines not in it);
    ``bf16`` needs a GPU that has it (Ampere or later).
    """
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if torch.device(device).type != "cuda":
        return None
    if precision == "auto":
        precision = AUTO_PRECISION.get(engine, "fp32")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise DeviceError("precision bf16 was asked for but this GPU has no bfloat16: use fp16 or fp32")
    return _DTYPES.get(precision)


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str = "auto", *, engine: str = "") -> Iterator[None]:
    """Run the block under CUDA autocast when :func:`autocast_dtype` says so; else as is."""
    dtype = autocast_dtype(device, precision, engine=engine)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield


class Autocast:
    """An engine whose painting methods run under autocast; everything else is the engine's.

    The CUDA path of the instant engines without touching their code: the loader wraps an
    engine in this when :func:`autocast_dtype` gives a half type. Tensors that come back are
    float32 again, so callers (PIL conversion, blending with the photo) see what they always see;
    cached features stay in half precision (half the memory).
    """

    METHODS = frozenset({"encode_content", "encode_style", "decode", "stylize"})

    def __init__(self, engine: Any, dtype: torch.dtype, *, device_type: str = "cuda") -> None:
        # device_type="cpu" (CPU autocast to bfloat16) exists for tests of this wrapper on
        # machines without a GPU; the product only wraps CUDA engines.
        self._engine = engine
        self._dtype = dtype
        self._device_type = device_type

    @property
    def wrapped(self) -> Any:
        """The engine itself."""
        return self._engine

    @property
    def autocast_dtype(self) -> torch.dtype:
        return self._dtype

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._engine, name)
        if name not in self.METHODS or not callable(attr):
            return attr
        return self._autocasting(attr)

    def _autocasting(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def run(*args: Any, **kwargs: Any) -> Any:
            with torch.autocast(device_type=self._device_type, dtype=self._dtype):
                result = method(*args, **kwargs)
            if isinstance(result, torch.Tensor) and result.is_floating_point() and result.dtype != torch.float32:
                return result.float()
            return result

        return run

    def __repr__(self) -> str:
        return f"Autocast({self._engine!r}, {self._dtype})"


def with_precision(engine: Any, device: torch.device, precision: str, *, name: str) -> Any:
    """``engine`` as is, or wrapped in :class:`Autocast` when ``precision`` asks for half on CUDA."""
    dtype = autocast_dtype(device, precision, engine=name)
    return engine if dtype is None else Autocast(engine, dtype)
