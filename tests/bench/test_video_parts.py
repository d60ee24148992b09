"""atelier bench video-parts' own parts: the long clip it paints has no cut, and the flicker is
split by the pairs that straddle a join."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from atelier.bench.video_parts import _split, looped_clip

from tests.service.service_fixtures import tiny_clip


def test_the_looped_clip_is_as_long_as_asked_and_has_no_cut(tmp_path: Path, content_dir: Path) -> None:
    short = tiny_clip(tmp_path / "short.mp4", content_dir / "dog.jpg", frames=12, fps=12)
    long = looped_clip(short, tmp_path / "long.mp4", seconds=5)
    with av.open(str(long)) as container:
        frames = [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(video=0)]
    assert len(frames) == 60
    steps = [float(np.abs(a - b).mean()) for a, b in zip(frames, frames[1:])]
    # Played forwards and backwards: a step is never bigger than the short clip's own steps
    # (a jump back to its first frame would be eleven of them).
    with av.open(str(short)) as container:
        own = [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(video=0)]
    largest = max(float(np.abs(a - b).mean()) for a, b in zip(own, own[1:]))
    assert max(steps) <= 1.2 * largest, (max(steps), largest)


def test_split_averages_the_pairs_at_the_joins_apart_from_the_rest() -> None:
    # Pair i is frames (i, i+1); a join at frame 3 is pair 2.
    assert _split([1.0, 1.0, 9.0, 1.0, 1.0, 7.0, float("nan")], [3, 6]) == (8.0, 1.0)
