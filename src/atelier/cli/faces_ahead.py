"""Faces looked for beside the start-up: ``atelier render`` of a photo file finds its faces in a
forked helper process while this one imports PyTorch and loads the engine.

A one-off render spends its first two seconds importing torch on one core; the face detector
(OpenCV's cascades, about half a second of CPU on a 1024 px photo) needs neither torch nor the
engine, so the helper runs it on the other core in that time. A process rather than a thread:
importing torch holds the GIL for most of those seconds, and OpenCV's libraries (about 45 MiB
resident) then never load into the painting process, whose peak is the command's peak; the
helper (about 110 MiB) has exited before the painting allocates its largest blocks.

The helper decodes the photo the same way (``decode_image``, then ``fit_longest`` for
``--size``) and calls the same :func:`atelier.art.blocks.faces.detect_faces`, so the faces are
the ones the painting would have found itself. Anything unusual (no ``fork`` on this system,
no OpenCV, a photo it cannot decode, a helper that dies) gives :data:`True` back: the painting
then looks for the faces itself, with its usual messages and refusals.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atelier.art.blocks.faces import Faces

log = logging.getLogger(__name__)


class FacesAhead:
    """The answer of one helper process, read (and the helper reaped) on the first :meth:`result`."""

    def __init__(self, pid: int, fd: int) -> None:
        self._pid, self._fd = pid, fd
        self._result: Faces | bool | None = None

    def result(self) -> Faces | bool:
        """The faces found (a :class:`Faces`, possibly empty), or True: look for them here."""
        if self._result is None:
            self._result = self._read()
        return self._result

    def _read(self) -> Faces | bool:
        chunks = []
        try:
            while chunk := os.read(self._fd, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(self._fd)
            try:
                os.waitpid(self._pid, 0)
            except ChildProcessError:
                pass
        try:
            found = pickle.loads(b"".join(chunks)) if chunks else None  # our own child's bytes
        except Exception:  # a helper cut off mid-answer
            found = None
        if found is None:
            log.debug("faces: the helper process found nothing to say; detecting here")
            return True
        return found


def look_ahead(photo: str | Path, *, size: int | None, max_pixels: int, max_bytes: int) -> FacesAhead | None:
    """Start looking for the faces of the photo file ``photo`` (painted at ``size``, the longest
    side, or its own) in a helper process; None where this system cannot fork or torch is loaded
    already (the helper would gain nothing)."""
    if not hasattr(os, "fork") or sys.platform == "darwin" or "torch" in sys.modules:
        return None
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:  # the helper: never returns
        os.close(read_end)
        try:
            answer = pickle.dumps(_detect(Path(photo), size=size, max_pixels=max_pixels, max_bytes=max_bytes))
            view = memoryview(answer)
            while view:
                view = view[os.write(write_end, view):]
        except BaseException:  # noqa: BLE001 - any failure means "detect in the painting process"
            pass
        finally:
            os._exit(0)  # no atexit handlers, no flushing the parent's buffers twice
    os.close(write_end)
    return FacesAhead(pid, read_end)


def _detect(photo: Path, *, size: int | None, max_pixels: int, max_bytes: int) -> Faces | None:
    from atelier.art.blocks.faces import detect_faces, detector_available
    from atelier.art.blocks.images import decode_image, fit_longest

    if not detector_available():
        return None  # the painting process says so in its own words
    content = decode_image(photo, max_pixels=max_pixels, max_bytes=max_bytes)
    if size is not None:
        content = fit_longest(content, size)
    return detect_faces(content)
