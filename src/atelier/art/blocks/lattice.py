"""The fixed 4/8 px lattice that MicroAST weaves into flat areas: a score for it and a filter.

MicroAST encodes at 1/4 resolution (two stride-2 convs) and decodes through two bilinear x2
upsamplings, so every output pixel's phase on the 4 px grid (and the 8 px grid of the
depthwise pairs) leaves a fixed pattern; in textured areas it hides, on a wall, a sky or a
cheek it reads as woven cloth. The official code has it too (the engine keeps the official
arithmetic; this is a separate step the product applies after it).

* :func:`lattice_score` -- how much of the picture's detail, on the areas where the *photo* is
  flat, sits at the lattice's frequencies (multiples of 1/8 cycle per pixel on both axes: the
  periods 8, 4, 8/3 and 2 px and their diagonals), as a share of all its detail there.
  Hann-windowed 32 px tiles; the photo's own score is the baseline (JPEG's 8 px blocks give a
  photo some).
* :func:`suppress_lattice` -- estimate the pattern locally (each pixel's deviation from its
  8x8 cell's mean, averaged over the neighbouring cells at the same phase: a real stroke does
  not repeat at one phase cell after cell, the lattice does) and subtract it where the photo is
  flat, fading out towards edges. Measured (note of issue 15), MicroAST + Starry Night at
  512 px: dog 0.121 -> 0.022, portrait 0.097 -> 0.023, Golden Gate 0.048 -> 0.016 (photos
  0.050, 0.015, 0.011); the 3415x2160 harbour with a 512 px style 0.066 -> 0.015 (photo
  0.018). The painting's strokes stay.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from atelier.art.blocks.color import LUMA_WEIGHTS
from atelier.art.errors import ArtError

PERIOD = 8
#: The photo counts as flat where its mean absolute luminance gradient (over a 9 px window) is
#: below this (0..1 units per pixel; about 8 levels of 255 across a window edge to edge).
FLAT_GRADIENT = 0.03
#: Cells (of PERIOD px) on each side of the local average: 3 = 24 px. Measured: 5 and 9 cells
#: leave two to three times the lattice (dog 0.053, 0.082), the strokes look the same.
CELLS = 3
_TILE = 32


def _luminance(image: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(LUMA_WEIGHTS, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image * weights).sum(1, keepdim=True)


def _check(picture: torch.Tensor, photo: torch.Tensor) -> None:
    if picture.dim() != 4 or picture.shape[1] != 3:
        raise ArtError(f"pictures must be (N, 3, H, W), got {tuple(picture.shape)}")
    if photo.shape[-2:] != picture.shape[-2:] or photo.shape[0] not in (1, picture.shape[0]):
        raise ArtError(f"the photo {tuple(photo.shape)} does not match the picture {tuple(picture.shape)}")


def flat_areas(photo: torch.Tensor, *, threshold: float = FLAT_GRADIENT) -> torch.Tensor:
    """(N, 1, H, W) 1 where ``photo`` is flat (little luminance gradient around), else 0."""
    y = _luminance(photo.float())
    gx = F.pad((y[..., :, 1:] - y[..., :, :-1]).abs(), (0, 1, 0, 0))
    gy = F.pad((y[..., 1:, :] - y[..., :-1, :]).abs(), (0, 0, 0, 1))
    gradient = F.avg_pool2d(gx + gy, 9, 1, 4, count_include_pad=False)
    return (gradient < threshold).to(photo.dtype if photo.is_floating_point() else torch.float32)


def lattice_score(picture: torch.Tensor, photo: torch.Tensor) -> float:
    """The share (0..1) of ``picture``'s detail on ``photo``'s flat areas that lies at the
    lattice's frequencies; NaN when the photo has no flat 32 px tile. One picture (1, 3, H, W)."""
    _check(picture, photo)
    y = _luminance(picture[:1].float())[0, 0]
    flat = flat_areas(photo[:1].float())[0, 0]
    window = torch.hann_window(_TILE, periodic=False, dtype=torch.float64)
    window = window[:, None] * window[None]
    k = torch.arange(_TILE)
    on = (k % (_TILE // PERIOD)) == 0
    lattice = on[:, None] & on[None]
    lattice[0, 0] = False
    tiles = y.unfold(0, _TILE, _TILE // 2).unfold(1, _TILE, _TILE // 2)  # (r, c, T, T)
    cover = flat.unfold(0, _TILE, _TILE // 2).unfold(1, _TILE, _TILE // 2).mean((-1, -2))
    chosen = tiles[cover >= 0.95].double()
    if chosen.numel() == 0:
        return float("nan")
    chosen = (chosen - chosen.mean((-1, -2), keepdim=True)) * window
    power = torch.fft.fft2(chosen).abs().square()
    power[:, 0, 0] = 0.0
    return float(power[:, lattice].sum() / power.sum().clamp_min(1e-20))


def suppress_lattice(picture: torch.Tensor, photo: torch.Tensor, *, cells: int = CELLS) -> torch.Tensor:
    """``picture`` (N, 3, H, W) with the fixed 8 px pattern taken out where ``photo`` is flat.

    Elsewhere the picture is unchanged; between the two the correction fades over 9 px.
    """
    _check(picture, photo)
    if cells < 1:
        raise ArtError(f"cells must be at least 1, got {cells}")
    n, c, height, width = picture.shape
    x = picture.float()
    pad_h, pad_w = (-height) % PERIOD, (-width) % PERIOD
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    rows, cols = x.shape[-2] // PERIOD, x.shape[-1] // PERIOD
    grid = x.view(n, c, rows, PERIOD, cols, PERIOD)
    deviation = grid - grid.mean(dim=(3, 5), keepdim=True)
    # Each phase of the cell as a channel, averaged over the neighbouring cells.
    phases = deviation.permute(0, 1, 3, 5, 2, 4).reshape(n, c * PERIOD * PERIOD, rows, cols)
    radius = cells // 2
    if radius:
        phases = F.avg_pool2d(F.pad(phases, (radius,) * 4, mode="replicate"), 2 * radius + 1, 1)
    pattern = phases.reshape(n, c, PERIOD, PERIOD, rows, cols).permute(0, 1, 4, 2, 5, 3)
    pattern = pattern.reshape(n, c, rows * PERIOD, cols * PERIOD)[..., :height, :width]
    weight = F.avg_pool2d(flat_areas(photo.float()), 9, 1, 4, count_include_pad=False)
    return (picture.float() - pattern * weight).clamp_(0.0, 1.0).to(picture.dtype)
