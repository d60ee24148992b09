"""Optical flow, the reliability mask, temporal blending and the flicker measure (art/blocks/flow.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from atelier.art.blocks.flow import FlickerMeter, FlowEstimator, TemporalBlender, reliable, to_gray, warp


def textured(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """A smooth random RGB picture (flow needs texture; smooth so that sub-pixel shifts are exact)."""
    rng = np.random.default_rng(seed)
    coarse = (rng.random((height // 8 + 3, width // 8 + 3, 3)) * 255).astype(np.uint8)
    big = cv2.resize(coarse, (width + 24, height + 24), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(big[:height, :width])


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The picture moved right by dx and down by dy (what the camera sees next)."""
    return np.ascontiguousarray(np.roll(image, (dy, dx), axis=(0, 1)))


@pytest.fixture(scope="module")
def sintel(shared_dir: Path) -> list[np.ndarray]:
    """Three real consecutive frames (Sintel 'mountain_2'), scaled to 256x109."""
    folder = shared_dir / "assets" / "video" / "mountain_2_frames"
    frames = []
    for name in ("frame_0001.png", "frame_0002.png", "frame_0003.png"):
        with Image.open(folder / name) as image:
            frames.append(np.asarray(image.convert("RGB").resize((256, 109), Image.Resampling.LANCZOS)))
    return frames


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_finds_a_translation_in_the_right_direction(method: str) -> None:
    a = textured()
    b = shifted(a, 3, 2)  # content moved right 3, down 2
    flow = FlowEstimator(method)(to_gray(a), to_gray(b))  # a(x) ~ b(x + flow)
    inner = flow[20:-20, 20:-20].reshape(-1, 2)
    assert np.median(inner[:, 0]) == pytest.approx(3.0, abs=0.3)
    assert np.median(inner[:, 1]) == pytest.approx(2.0, abs=0.3)


def test_flow_on_frames_larger_than_its_working_size_is_scaled_back_to_their_pixels() -> None:
    a = textured(240, 320)
    b = shifted(a, 4, 0)
    flow = FlowEstimator("dis", side=160)(to_gray(a), to_gray(b))
    assert flow.shape == (240, 320, 2)
    assert np.median(flow[40:-40, 40:-40, 0]) == pytest.approx(4.0, abs=0.5)


def test_warp_with_the_backward_flow_brings_the_previous_frame_onto_the_current_one(sintel: list[np.ndarray]) -> None:
    previous, current = sintel[0], sintel[1]
    backward = FlowEstimator("dis")(to_gray(current), to_gray(previous))
    warped = warp(previous, backward)
    mask = reliable(backward, FlowEstimator("dis")(to_gray(previous), to_gray(current))).astype(bool)
    error_warped = np.abs(warped.astype(float) - current)[mask].mean()
    error_plain = np.abs(previous.astype(float) - current)[mask].mean()
    assert mask.mean() > 0.5
    assert error_warped < 0.6 * error_plain


def test_reliable_marks_pixels_that_came_from_outside_the_frame() -> None:
    a = textured()
    b = shifted(a, 6, 0)
    estimate = FlowEstimator("dis")
    backward, forward = estimate(to_gray(b), to_gray(a)), estimate(to_gray(a), to_gray(b))
    mask = reliable(backward, forward)
    assert mask[:, :4].mean() < 0.2  # the left edge came into view: nothing to warp from
    assert mask[20:-20, 30:-20].mean() > 0.9


def test_reliable_marks_a_disocclusion_behind_a_moving_object() -> None:
    background = textured(seed=1)
    square = textured(40, 40, seed=2)
    first, second = background.copy(), background.copy()
    first[40:80, 40:80] = square
    second[40:80, 52:92] = square  # the square moved 12 px right; its old left part reappears
    estimate = FlowEstimator("dis")
    mask = reliable(estimate(to_gray(second), to_gray(first)), estimate(to_gray(first), to_gray(second)))
    uncovered = mask[45:75, 42:50].mean()
    still_background = mask[10:30, 100:150].mean()
    assert uncovered < 0.5 < still_background


def test_blender_passes_the_first_frame_through_unchanged() -> None:
    frame = textured()
    painting = np.random.default_rng(0).random(frame.shape, dtype=np.float32)
    assert np.array_equal(TemporalBlender()(frame, painting), painting)


def test_blender_steadies_a_painting_that_jitters_on_a_still_scene() -> None:
    frame = textured()
    rng = np.random.default_rng(0)
    base = rng.random(frame.shape, dtype=np.float32) * 0.5 + 0.25
    paintings = [np.clip(base + rng.normal(0, 0.1, frame.shape).astype(np.float32), 0, 1) for _ in range(6)]
    blender = TemporalBlender(weight=0.6)
    outputs = [blender(frame, p) for p in paintings]
    jitter_in = np.mean([np.abs(b - a).mean() for a, b in zip(paintings, paintings[1:])])
    jitter_out = np.mean([np.abs(b - a).mean() for a, b in zip(outputs, outputs[1:])])
    assert jitter_out < 0.6 * jitter_in


def test_blender_follows_the_motion_instead_of_smearing_it() -> None:
    frame = textured()
    moved = shifted(frame, 5, 0)
    painting = frame.astype(np.float32) / 255  # a painting that moves with the picture
    blender = TemporalBlender(weight=0.6)
    blender(frame, painting)
    out = blender(moved, shifted(frame, 5, 0).astype(np.float32) / 255)
    expected = moved.astype(np.float32) / 255
    assert np.abs(out - expected)[10:-10, 15:-10].mean() < 0.01


def test_blender_does_not_carry_the_old_painting_across_a_cut() -> None:
    blender = TemporalBlender(weight=0.8)
    first, after_cut = textured(seed=3), textured(seed=4)
    blender(first, np.zeros(first.shape, np.float32))
    new = np.ones(after_cut.shape, np.float32)
    out = blender(after_cut, new)
    assert out.mean() > 0.9  # the photometric check rejects the warp almost everywhere


def test_blender_refuses_a_weight_that_would_freeze_the_video() -> None:
    with pytest.raises(ValueError):
        TemporalBlender(weight=1.0)


def test_flicker_is_zero_for_a_still_painting_and_grows_with_jitter() -> None:
    frame = textured()
    still = FlickerMeter()
    painting = frame.astype(np.float32) / 255
    for _ in range(3):
        still.add(frame, painting)
    # Farneback finds a tiny non-zero flow on identical frames; bilinear resampling of it costs
    # a hundredth of a level.
    assert still.flicker == pytest.approx(0.0, abs=0.05)
    assert still.input_flicker == pytest.approx(0.0, abs=0.05)

    rng = np.random.default_rng(0)
    levels = []
    for sigma in (0.02, 0.08):
        meter = FlickerMeter()
        for _ in range(4):
            meter.add(frame, np.clip(painting + rng.normal(0, sigma, painting.shape), 0, 1).astype(np.float32))
        levels.append(meter.flicker)
    assert 0 < levels[0] < levels[1]


def test_flicker_of_a_painting_that_moves_with_the_picture_is_small(sintel: list[np.ndarray]) -> None:
    meter = FlickerMeter()
    for frame in sintel:
        meter.add(frame, frame.astype(np.float32) / 255)
    assert meter.flicker is not None and meter.flicker == pytest.approx(meter.input_flicker)
    assert meter.flicker < 6.0  # real motion, warped: a few levels of 255


def test_flicker_needs_two_frames() -> None:
    meter = FlickerMeter()
    assert meter.flicker is None
    meter.add(textured(), np.zeros((120, 160, 3), np.float32))
    assert meter.flicker is None
