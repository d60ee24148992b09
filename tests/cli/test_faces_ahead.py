"""The first photo's faces are looked for in a helper process while `atelier render` imports
torch: the same faces as the painting would find itself, and a plain "detect here" (True)
whenever the helper has nothing to say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atelier.art.blocks.faces import detect_faces, detector_available
from atelier.art.blocks.images import decode_image, fit_longest

LIMITS = {"max_pixels": 40_000_000, "max_bytes": 30 * 1024 * 1024}

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the helper is forked")


def _ahead_in_a_fresh_process(photo: Path, size: int | None) -> dict[str, object]:
    # A fresh interpreter, as the command is: torch not imported yet (in pytest it is).
    code = (
        "import json, sys\n"
        "from atelier.cli.faces_ahead import look_ahead\n"
        f"ahead = look_ahead({str(photo)!r}, size={size!r}, **{LIMITS!r})\n"
        "found = ahead.result() if ahead is not None else None\n"
        "boxes = None if found in (None, True) else [f.as_tuple() for f in found.faces]\n"
        "print(json.dumps({'started': ahead is not None, 'result': boxes if boxes is not None else repr(found),\n"
        "                  'torch': 'torch' in sys.modules, 'cv2': 'cv2' in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not detector_available(), reason="OpenCV's cascades are not installed")
@pytest.mark.parametrize("size", [None, 300])
def test_the_helper_finds_the_faces_the_painting_would_find(content_dir: Path, size: int | None) -> None:
    photo = content_dir / "brad_pitt.jpg"
    content = decode_image(photo, **LIMITS)
    if size is not None:
        content = fit_longest(content, size)
    expected = [list(f.as_tuple()) for f in detect_faces(content).faces]
    assert expected, "the test photo has a face"
    seen = _ahead_in_a_fresh_process(photo, size)
    assert seen["started"] is True
    assert seen["result"] == expected
    # Neither torch nor OpenCV was loaded by the process that asked: the helper did the work.
    assert seen["torch"] is False and seen["cv2"] is False


def test_a_photo_the_helper_cannot_decode_is_left_to_the_painting(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    assert _ahead_in_a_fresh_process(broken, None)["result"] == "True"


def test_no_helper_once_torch_is_loaded(content_dir: Path) -> None:
    import torch  # noqa: F401 - the helper would gain nothing

    from atelier.cli.faces_ahead import look_ahead

    assert look_ahead(content_dir / "brad_pitt.jpg", size=None, **LIMITS) is None
