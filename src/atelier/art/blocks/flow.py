"""Optical flow between video frames: steadier stylized video, and a measure of its flicker.

A feed-forward style network paints every frame on its own, so a small change in the input (a
moving object, sensor noise, a compression artefact) re-arranges the brush strokes and the video
"boils". Ruder, Dosovitskiy & Brox ("Artistic style transfer for videos", GCPR 2016) fix this
inside the Gatys optimisation: the previous stylized frame, warped to the current one with the
optical flow of the *input* frames, initialises the next optimisation and a temporal loss keeps
the result close to it wherever the flow is reliable (occlusions and motion boundaries masked).

We cannot afford an optimisation per frame. :class:`TemporalBlender` is the cheap post-hoc
variant for feed-forward engines: the same warp and the same reliability mask, but instead of a
loss the warped previous *output* is blended into the new stylized frame::

    out_t = m * w * warp(out_{t-1}) + (1 - m * w) * stylized_t

with ``w`` the blend weight (0.6 by default) and ``m`` in 0..1 the reliability of each pixel:
Ruder et al.'s forward-backward consistency check (disocclusions and motion boundaries get 0),
times a photometric term that is 1 where the warped previous *input* frame matches the current
one and falls to 0 where it does not (a wrong flow vector, a lighting change, a scene cut). Since
``out_{t-1}`` is itself blended, this is an exponential moving average along motion paths: a
stroke that stays on an object is kept for about ``1 / (1 - w)`` frames, and new detail takes
over as fast. Larger ``w`` is steadier but leaves ghosts where the painting itself jumps (a
filter's big motifs move from frame to frame; blending cross-fades them) and softens detail,
since every warp resamples bilinearly. At 0.6 the flicker the painting adds on top of the clip's
own was about halved on the shared clips (candy filter on the bunny's first 32 frames at 320x180:
18.0 -> 8.5, input 1.8) with faint ghosts at most; 0.8 went to 5.6 with visible ghosts and
softer faces.

:class:`FlickerMeter` measures what this is for: the *warping error* of Lai et al. ("Learning
Blind Video Temporal Consistency", ECCV 2018), here with the mean absolute difference: for each
pair of consecutive output frames, the mean of ``|out_t - warp(out_{t-1})|`` over pixels where
the flow of the input frames is reliable, in 8-bit levels (0..255), averaged over the pairs. It
uses Farneback flow, not the DIS flow the blender uses, so that the blender is not graded by its
own flow field. The same measure over the input frames is the floor a perfectly steady
stylization would reach.

Frames here are numpy arrays, (H, W, 3) RGB, uint8 for inputs and float32 in 0..1 for stylized
frames; flows are (H, W, 2) float32 in pixels, such that ``a(x) ~ b(x + flow(x))`` for the flow
from ``a`` to ``b``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

log = logging.getLogger(__name__)

FlowMethod = Literal["dis", "farneback"]

#: Blend weight of the warped previous output (``w`` above).
DEFAULT_WEIGHT = 0.6
#: Flow is estimated on frames scaled down to this longest side, then scaled back up: motion
#: that matters for flicker is coarse, and DIS/Farneback cost grows with the pixel count.
DEFAULT_FLOW_SIDE = 640
#: The flicker measure works on frames scaled down to this longest side (bounded cost at 1080p).
DEFAULT_MEASURE_SIDE = 480
#: Photometric check: the warped previous input may differ from the current input by this much
#: (0..1 units, mean over RGB) before a pixel's blend weight starts to fall; at twice it, it is 0.
PHOTOMETRIC_TOLERANCE = 0.04
#: Smallest side on which flow is estimated at all (DIS needs a few 8x8 patches).
MIN_FLOW_SIDE = 16


# ----------------------------------------------------------------------------- flow


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> (H, W) uint8 luma, what the flow estimators read."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _scaled(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest <= side:
        return image
    scale = side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class FlowEstimator:
    """Dense optical flow between two grey frames of one size, computed at most ``side`` pixels
    on the longest side and returned at the frames' own size (vectors in their pixels).

    ``dis``: OpenCV's DIS flow (Kroeger et al. 2016), the "fast" preset with variational
    refinement -- about 10-20 ms at 640x360 here. ``farneback``: Farneback's polynomial
    expansion (2003), slower; the flicker meter uses it as an independent second opinion.
    """

    def __init__(self, method: FlowMethod = "dis", *, side: int = DEFAULT_FLOW_SIDE) -> None:
        if method not in ("dis", "farneback"):
            raise ValueError(f"unknown flow method {method!r}: use 'dis' or 'farneback'")
        if side < MIN_FLOW_SIDE:
            raise ValueError(f"flow side must be at least {MIN_FLOW_SIDE}, got {side}")
        self.method = method
        self.side = side
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST) if method == "dis" else None

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow from grey frame ``a`` to grey frame ``b``: ``a(x) ~ b(x + flow(x))``."""
        if a.shape != b.shape or a.ndim != 2:
            raise ValueError(f"flow needs two grey frames of one size, got {a.shape} and {b.shape}")
        height, width = a.shape
        small_a, small_b = _scaled(a, self.side), _scaled(b, self.side)
        if min(small_a.shape) < MIN_FLOW_SIDE:
            return np.zeros((height, width, 2), np.float32)
        if self._dis is not None:
            flow = self._dis.calc(small_a, small_b, None)
        else:
            flow = cv2.calcOpticalFlowFarneback(
                small_a, small_b, None, pyr_scale=0.5, levels=4, winsize=15, iterations=3,
                poly_n=5, poly_sigma=1.2, flags=0,
            )
        if small_a.shape != a.shape:
            sy, sx = height / small_a.shape[0], width / small_a.shape[1]
            flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
            flow[..., 0] *= sx
            flow[..., 1] *= sy
        return flow.astype(np.float32, copy=False)


def _grid(height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([xs, ys], axis=-1)


def warp(image: np.ndarray, flow: np.ndarray, *, grid: np.ndarray | None = None) -> np.ndarray:
    """``image`` sampled at ``x + flow(x)`` (bilinear; the border repeats outside the frame).

    With the flow from frame t to frame t-1, this brings frame t-1 (or anything painted on it)
    onto frame t.
    """
    height, width = flow.shape[:2]
    coords = (grid if grid is not None else _grid(height, width)) + flow
    return cv2.remap(image, coords, None, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def reliable(backward: np.ndarray, forward: np.ndarray, *, grid: np.ndarray | None = None) -> np.ndarray:
    """Where the warp from frame t-1 to frame t can be trusted: a float32 (H, W) mask of 0 / 1.

    ``backward`` is the flow from frame t to t-1, ``forward`` from t-1 to t. As in Ruder et al.
    (2016, Sec. 3.2, after Sundaram et al. 2010) a pixel is unreliable when

    * the two flows do not cancel out (a disocclusion):
      ``|b + f(x + b)|^2 > 0.01 (|b|^2 + |f(x + b)|^2) + 0.5``;
    * it sits on a motion boundary: ``|grad b_x|^2 + |grad b_y|^2 > 0.01 |b|^2 + 0.002``;
    * it comes from outside the previous frame.
    """
    height, width = backward.shape[:2]
    grid = grid if grid is not None else _grid(height, width)
    coords = grid + backward
    forward_there = cv2.remap(forward, coords, None, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    total = backward + forward_there
    disoccluded = (total**2).sum(-1) > 0.01 * ((backward**2).sum(-1) + (forward_there**2).sum(-1)) + 0.5
    gradients = 0.0
    for channel in range(2):
        gy, gx = np.gradient(backward[..., channel])
        gradients = gradients + gx**2 + gy**2
    boundary = gradients > 0.01 * (backward**2).sum(-1) + 0.002
    outside = (
        (coords[..., 0] < 0) | (coords[..., 0] > width - 1) | (coords[..., 1] < 0) | (coords[..., 1] > height - 1)
    )
    return (~(disoccluded | boundary | outside)).astype(np.float32)


# ----------------------------------------------------------------------------- blending


@dataclass
class TemporalBlender:
    """Feed frames in order; each comes back blended with the warped previous output.

    ``weight`` is ``w`` in the module docstring (0 turns blending off). The first frame, and any
    frame after :meth:`reset`, passes through unchanged.
    """

    weight: float = DEFAULT_WEIGHT
    method: FlowMethod = "dis"
    flow_side: int = DEFAULT_FLOW_SIDE
    tolerance: float = PHOTOMETRIC_TOLERANCE
    _flow: FlowEstimator = field(init=False, repr=False)
    _prev_gray: np.ndarray | None = field(default=None, init=False, repr=False)
    _prev_input: np.ndarray | None = field(default=None, init=False, repr=False)
    _prev_output: np.ndarray | None = field(default=None, init=False, repr=False)
    _grid: np.ndarray | None = field(default=None, init=False, repr=False)
    #: Mean blend weight (m * w) of the frames so far, for the report.
    blended: list[float] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight < 1.0:
            raise ValueError(f"the temporal blend weight must be in [0, 1), got {self.weight}")
        self._flow = FlowEstimator(self.method, side=self.flow_side)

    def reset(self) -> None:
        """Forget the previous frame (a new clip, or a cut the caller knows about)."""
        self._prev_gray = self._prev_input = self._prev_output = None

    def __call__(self, frame: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        """``frame``: the input (H, W, 3) uint8; ``stylized``: its painting, (H, W, 3) float32
        0..1 of the same size. Returns the steadied painting, float32 0..1."""
        if frame.shape[:2] != stylized.shape[:2]:
            raise ValueError(f"frame {frame.shape} and stylized frame {stylized.shape} differ in size")
        gray = to_gray(frame)
        current = frame.astype(np.float32) / 255.0
        out = stylized
        if self._prev_output is not None and self._prev_output.shape == stylized.shape and self.weight > 0:
            if self._grid is None or self._grid.shape[:2] != gray.shape:
                self._grid = _grid(*gray.shape)
            backward = self._flow(gray, self._prev_gray)
            forward = self._flow(self._prev_gray, gray)
            mask = reliable(backward, forward, grid=self._grid)
            # Photometric check: trust the warp only where it also brings the previous *input*
            # onto the current one (catches wrong vectors, lighting changes and cuts).
            error = np.abs(warp(self._prev_input, backward, grid=self._grid) - current).mean(-1)
            mask *= np.clip(2.0 - error / self.tolerance, 0.0, 1.0)
            # Soften the mask's edges so an occlusion boundary does not become a visible seam.
            mask = cv2.GaussianBlur(mask, (5, 5), 0)
            alpha = (self.weight * mask)[..., None]
            warped = warp(self._prev_output, backward, grid=self._grid)
            out = alpha * warped + (1.0 - alpha) * stylized
            self.blended.append(float(alpha.mean()))
        out = np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
        self._prev_gray, self._prev_input, self._prev_output = gray, current, out
        return out


# ----------------------------------------------------------------------------- measuring


@dataclass
class FlickerMeter:
    """The warping error of consecutive frames (see the module docstring), in 8-bit levels.

    Feed ``add(input_frame, output_frame)`` in order; :attr:`flicker` is the mean over the pairs
    of the output's warping error, :attr:`input_flicker` the same over the input frames. Frames
    are scaled to ``side`` pixels on the longest side first, so the cost is bounded.
    """

    side: int = DEFAULT_MEASURE_SIDE
    method: FlowMethod = "farneback"
    _flow: FlowEstimator = field(init=False, repr=False)
    _prev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)
    _grid: np.ndarray | None = field(default=None, init=False, repr=False)
    errors: list[float] = field(default_factory=list, init=False, repr=False)
    input_errors: list[float] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        # The frames are already at ``side``; the estimator must not scale them again.
        self._flow = FlowEstimator(self.method, side=max(self.side, MIN_FLOW_SIDE))

    def add(self, frame: np.ndarray, output: np.ndarray) -> None:
        """One more frame: the input (H, W, 3) uint8 and the output (H, W, 3) float32 0..1."""
        small_in = _scaled(frame, self.side)
        small_out = _scaled(np.ascontiguousarray(output, dtype=np.float32), self.side)
        gray = to_gray(small_in)
        current_in = small_in.astype(np.float32) / 255.0
        if self._prev is not None and self._prev[0].shape == gray.shape and min(gray.shape) >= MIN_FLOW_SIDE:
            prev_gray, prev_in, prev_out = self._prev
            if self._grid is None or self._grid.shape[:2] != gray.shape:
                self._grid = _grid(*gray.shape)
            backward = self._flow(gray, prev_gray)
            forward = self._flow(prev_gray, gray)
            mask = reliable(backward, forward, grid=self._grid)
            count = float(mask.sum())
            if count > 0:
                out_diff = np.abs(small_out - warp(prev_out, backward, grid=self._grid)).mean(-1)
                in_diff = np.abs(current_in - warp(prev_in, backward, grid=self._grid)).mean(-1)
                self.errors.append(255.0 * float((out_diff * mask).sum()) / count)
                self.input_errors.append(255.0 * float((in_diff * mask).sum()) / count)
        self._prev = (gray, current_in, small_out)

    @property
    def flicker(self) -> float | None:
        """Mean warping error of the output frames, 8-bit levels; None before two frames."""
        return float(np.mean(self.errors)) if self.errors else None

    @property
    def input_flicker(self) -> float | None:
        """The same measure over the input frames: what a perfectly steady painting would keep."""
        return float(np.mean(self.input_errors)) if self.input_errors else None
