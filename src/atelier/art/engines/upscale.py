"""waifu2x 2x upscaling and denoising, from the official ncnn weights, run in PyTorch.

The networks are nagadomi's waifu2x as converted to ncnn by nihui (waifu2x-ncnn-vulkan):

* ``upconv_7_photo`` and ``upconv_7_art``: seven valid 3x3 convolutions and a stride-2
  deconvolution; each output pixel sees a 7-pixel neighbourhood of the input.
* ``cunet``: a two-stage U-Net with squeeze-and-excitation (SE) blocks; 18 pixels of context
  for 2x, 28 for its 1x denoise-only models. Sharper, about 1.5x the compute of upconv_7.

Each comes as ``scale2.0x_model`` (no denoise) and ``noise{0..3}_scale2.0x_model``; cunet also
has ``noise{0..3}_model`` at 1x. The graph is read from the ``.param`` file and run by
:mod:`atelier.art.blocks.ncnn_format`; scale, context margin and size alignment are measured from the
graph itself rather than written down here.

Tiling follows waifu2x-ncnn-vulkan: the image is cut into tiles, each tile is cut out *with* its
context margin from the neighbouring pixels (replicate padding only at the image's borders), and
the tiles' outputs are pasted edge to edge. For upconv_7 that is exact: a tiled result equals
the whole-image result. cunet's SE blocks average over their whole input, which per tile gives
slightly different colours per tile; by default (``se_scope="image"``) this module departs from
the official tiler and first gathers each SE block's average over the whole image, one pass per
block, so tiled cunet output equals the untiled output too, at about 2.8x the compute when the
image needs more than one tile. ``se_scope="tile"`` is the official, faster behaviour.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from atelier.art.errors import ImageError, ModelError, ModelMissingError
from atelier.art.blocks.ncnn_format import NcnnNet, PooledSum, TileCore, load_ncnn
from atelier.art.progress import Progress, ProgressCallback

log = logging.getLogger(__name__)

#: The model choices and their folders in the official release (and under <models_dir>/waifu2x).
MODEL_FOLDERS: dict[str, str] = {
    "upconv_7_photo": "models-upconv_7_photo",
    "upconv_7_art": "models-upconv_7_anime_style_art_rgb",
    "cunet": "models-cunet",
}
MODELS: tuple[str, ...] = tuple(MODEL_FOLDERS)
NOISE_LEVELS: tuple[int, ...] = (-1, 0, 1, 2, 3)

#: The denoise level used when none is given: 2, the level picmatix upscaled its paintings with.
#: What gets upscaled here is either a JPEG upload or a painted optimisation result with
#: high-frequency grain; level 2 removes both, and on a clean picture it costs 0.5 dB
#: (upconv_7_photo on butterfly: 32.0 dB without denoise, 31.5 with; MODELS.md section 3),
#: which is invisible, whereas -1 faithfully doubles every artefact.
DEFAULT_NOISE = 2

#: Default tile side (input pixels) per model: big enough that the context margin costs little
#: (upconv_7: +5 % work at 512), small enough that one tile's activations stay near 0.5 GB.
DEFAULT_TILE: dict[str, int] = {"upconv_7_photo": 512, "upconv_7_art": 512, "cunet": 384}

SeScope = Literal["image", "tile"]


def registry_name(model: str) -> str:
    """The model registry's name for a model choice (``waifu2x-cunet`` ...)."""
    return f"waifu2x-{model}"


def model_stem(*, noise: int = -1, scale: int = 2) -> str:
    """The official file stem for a noise level and scale (``noise2_scale2.0x_model``)."""
    if noise not in NOISE_LEVELS:
        raise ModelError(f"noise level must be one of -1 (none), 0, 1, 2, 3; got {noise}")
    if scale == 2:
        return "scale2.0x_model" if noise < 0 else f"noise{noise}_scale2.0x_model"
    if scale == 1:
        if noise < 0:
            raise ModelError("a 1x waifu2x model only denoises: give a noise level 0..3")
        return f"noise{noise}_model"
    raise ModelError(f"waifu2x scales by 1 or 2, not {scale}")


@dataclass(frozen=True)
class Waifu2xFiles:
    """The ``.param`` and ``.bin`` of one model choice (found by
    :func:`atelier.install.models.waifu2x_files`, which knows where they are installed)."""

    model: str
    noise: int
    scale: int
    param: Path
    bin: Path


def check_choice(model: str, *, noise: int = -1, scale: int = 2) -> str:
    """The official file stem of a model choice, or :class:`ModelError` for one that does not
    exist (an unknown model, a noise level or scale it does not have)."""
    if model not in MODEL_FOLDERS:
        raise ModelError(f"unknown waifu2x model {model!r}: choose one of {', '.join(MODELS)}")
    stem = model_stem(noise=noise, scale=scale)
    if scale == 1 and model != "cunet":
        raise ModelError(f"only cunet has 1x denoise models, not {model}")
    return stem


def load_waifu2x(*, param: Path, bin: Path, device: str | torch.device = "cpu") -> NcnnNet:
    """Read an official waifu2x ncnn ``.param``/``.bin`` pair into a PyTorch module.

    The fp16 weights are widened to fp32. The module maps a replicate-padded RGB (N, 3, H, W)
    tensor in 0..1 to the upscaled image; :class:`Upscaler` does the padding and tiling.
    """
    for path in (param, bin):
        if not Path(path).is_file():
            raise ModelMissingError(f"waifu2x weights not installed: {path} is missing")
    net = load_ncnn(Path(param), Path(bin))
    for name in ("Input1", "Eltwise4"):
        if name not in {blob for layer in net.layers for blob in layer.outputs}:
            raise ModelError(f"{param} is not a waifu2x model (no blob {name!r})")
    return net.to(torch.device(device)).eval()


@dataclass(frozen=True)
class _Tile:
    """A piece of the image: its core rows/cols [y0, y1) x [x0, x1) (aligned, may run past
    the image on the bottom/right) and where that core sits in the tile grid."""

    y0: int
    y1: int
    x0: int
    x1: int
    first_row: bool
    last_row: bool
    first_col: bool
    last_col: bool

    def core(self) -> TileCore:
        return TileCore(
            y=(None if self.first_row else self.y0, None if self.last_row else self.y1),
            x=(None if self.first_col else self.x0, None if self.last_col else self.x1),
        )


def _edges(size: int, tile: int, align: int) -> list[int]:
    end = math.ceil(size / align) * align
    return list(range(0, end, tile)) + [end]


class Upscaler:
    """A loaded waifu2x model, ready to upscale images of any size.

    ``scale``, ``prepadding`` (context pixels on each side) and ``alignment`` (tiles and padded
    sizes are multiples of it) are measured from the graph: 2 / 7 / 1 for upconv_7,
    2 / 18 / 2 for cunet, 1 / 28 / 4 for cunet's denoise-only models.
    """

    def __init__(self, net: NcnnNet, *, name: str = "waifu2x", default_tile: int = 512) -> None:
        self.net = net.eval()
        self.name = name
        self.scale, shrink, self.alignment = net.geometry()
        if shrink % self.scale:
            raise ModelError(f"{name}: the graph's context margin is not a whole number of input pixels")
        self.prepadding = shrink // self.scale
        self.default_tile = max(self.alignment, default_tile // self.alignment * self.alignment)

    @classmethod
    def load(cls, files: Waifu2xFiles, *, device: str | torch.device = "cpu") -> Upscaler:
        """Load a model choice (``upconv_7_photo``, ``upconv_7_art``, ``cunet`` at a noise level)
        from its files."""
        net = load_waifu2x(param=files.param, bin=files.bin, device=device)
        label = f"{files.model} {model_stem(noise=files.noise, scale=files.scale)}"
        return cls(net, name=label, default_tile=DEFAULT_TILE[files.model])

    @property
    def device(self) -> torch.device:
        return next(self.net.buffers()).device

    # -- public ---------------------------------------------------------------------------------

    def upscale(
        self,
        image: torch.Tensor,
        *,
        tile: int | None = None,
        se_scope: SeScope = "image",
        progress: ProgressCallback | None = None,
    ) -> torch.Tensor:
        """(N, 3, H, W) RGB in 0..1 -> (N, 3, scale*H, scale*W) in 0..1 (clamped), on the CPU.

        ``tile`` is the tile side in input pixels (rounded down to the alignment); ``None``
        uses the model's default. Memory is bounded by one tile's activations plus the output.
        """
        if image.dim() != 4 or image.shape[1] != 3:
            raise ImageError(f"waifu2x takes an (N, 3, H, W) RGB tensor, got shape {tuple(image.shape)}")
        n, _, height, width = image.shape
        source = image.detach().float().cpu()
        out = torch.empty(n, 3, height * self.scale, width * self.scale)

        def read(rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
            return source[:, :, torch.from_numpy(rows)][..., torch.from_numpy(cols)]

        def write(y: int, x: int, piece: torch.Tensor) -> None:
            h = min(piece.shape[-2], out.shape[-2] - y)
            w = min(piece.shape[-1], out.shape[-1] - x)
            out[:, :, y : y + h, x : x + w] = piece[..., :h, :w].clamp(0, 1)

        self._run(n, height, width, read, write, tile=tile, se_scope=se_scope, progress=progress)
        return out

    def upscale_image(
        self,
        image: Image.Image,
        *,
        tile: int | None = None,
        se_scope: SeScope = "image",
        progress: ProgressCallback | None = None,
    ) -> Image.Image:
        """A PIL image -> the upscaled RGB PIL image, holding only 8-bit pixels between tiles.

        This is the path for big pictures: a 3415x2160 photo keeps a 22 MB input and an 89 MB
        output around instead of float copies of both. Alpha is dropped (waifu2x is RGB).
        """
        if image.mode != "RGB":
            image = image.convert("RGB")
        pixels = np.asarray(image, dtype=np.uint8)
        height, width = pixels.shape[:2]
        out = np.empty((height * self.scale, width * self.scale, 3), dtype=np.uint8)

        def read(rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
            window = pixels[rows][:, cols]
            return torch.from_numpy(window).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)

        def write(y: int, x: int, piece: torch.Tensor) -> None:
            h = min(piece.shape[-2], out.shape[0] - y)
            w = min(piece.shape[-1], out.shape[1] - x)
            # Same rounding as atelier.art.blocks.images.to_pil.
            values = piece[0, :, :h, :w].clamp(0, 1).mul_(255).round_().to(torch.uint8)
            out[y : y + h, x : x + w] = values.permute(1, 2, 0).cpu().numpy()

        self._run(1, height, width, read, write, tile=tile, se_scope=se_scope, progress=progress)
        return Image.fromarray(out, "RGB")

    # -- the tiler ---------------------------------------------------------------------------------

    def tiles(self, height: int, width: int, *, tile: int | None = None) -> list[_Tile]:
        """The tile grid for an image: cores of ``tile`` pixels, the last row/column aligned."""
        side = self.default_tile if tile is None else int(tile)
        if side <= 0:
            raise ValueError(f"tile must be a positive number of pixels, got {tile}")
        side = max(self.alignment, side // self.alignment * self.alignment)
        rows, cols = _edges(height, side, self.alignment), _edges(width, side, self.alignment)
        return [
            _Tile(
                y0, y1, x0, x1,
                first_row=i == 0, last_row=i == len(rows) - 2,
                first_col=j == 0, last_col=j == len(cols) - 2,
            )
            for i, (y0, y1) in enumerate(zip(rows, rows[1:]))
            for j, (x0, x1) in enumerate(zip(cols, cols[1:]))
        ]

    def _windows(self, tile: _Tile, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        # The tile plus its context; reads past the image repeat the edge pixel (replicate
        # padding), exactly as the official preprocessing shader clamps its coordinates.
        p = self.prepadding
        rows = np.clip(np.arange(tile.y0 - p, tile.y1 + p), 0, height - 1)
        cols = np.clip(np.arange(tile.x0 - p, tile.x1 + p), 0, width - 1)
        return rows, cols

    def _run(
        self,
        batch: int,
        height: int,
        width: int,
        read: Callable[[np.ndarray, np.ndarray], torch.Tensor],
        write: Callable[[int, int, torch.Tensor], None],
        *,
        tile: int | None,
        se_scope: SeScope,
        progress: ProgressCallback | None,
    ) -> None:
        if height < 1 or width < 1:
            raise ImageError("the image is empty")
        if se_scope not in ("image", "tile"):
            raise ValueError(f"se_scope must be 'image' or 'tile', got {se_scope!r}")
        grid = self.tiles(height, width, tile=tile)
        stats_layers = self.net.pooling_layers if se_scope == "image" and len(grid) > 1 else []
        total = len(grid) * (len(stats_layers) + 1)
        steps = _Counter(total, progress, len(grid))
        device = self.device
        pooled: dict[str, torch.Tensor] = {}
        log.info("%s: %dx%d in %d tiles, %d passes", self.name, width, height, len(grid), len(stats_layers) + 1)

        def pieces() -> Iterator[tuple[_Tile, torch.Tensor]]:
            for piece in grid:
                rows, cols = self._windows(piece, height, width)
                yield piece, read(rows, cols).to(device)

        for layer in stats_layers:
            # One pass per SE block: its input depends on the blocks before it.
            total_sum: torch.Tensor | None = None
            count = 0
            for piece, x in pieces():
                _, part = self.net.run(
                    x,
                    origin=(piece.y0 - self.prepadding, piece.x0 - self.prepadding),
                    pooled=pooled,
                    collect=layer,
                    core=piece.core(),
                )
                assert isinstance(part, PooledSum)
                total_sum = part.total if total_sum is None else total_sum + part.total
                count += part.count
                steps.tick(f"context {len(pooled) + 1}/{len(stats_layers)}")
            assert total_sum is not None
            pooled[layer] = (total_sum / count).float()
        for piece, x in pieces():
            y, _ = self.net.run(x, origin=(piece.y0 - self.prepadding, piece.x0 - self.prepadding), pooled=pooled)
            expected = ((piece.y1 - piece.y0) * self.scale, (piece.x1 - piece.x0) * self.scale)
            if tuple(y.shape[-2:]) != expected:  # pragma: no cover - a graph/geometry mismatch
                raise ModelError(f"{self.name}: tile gave {tuple(y.shape[-2:])}, expected {expected}")
            write(piece.y0 * self.scale, piece.x0 * self.scale, y.float().cpu())
            steps.tick("upscale")


class _Counter:
    """Numbers the tiles of all passes as one run, so a progress bar only ever moves forward."""

    def __init__(self, total: int, progress: ProgressCallback | None, tiles: int) -> None:
        self.total, self.progress, self.tiles, self.step = total, progress, tiles, 0

    def tick(self, stage: str) -> None:
        self.step += 1
        if self.progress is not None:
            self.progress(Progress(stage=stage, step=self.step, total=self.total, extra={"tiles": self.tiles}))

