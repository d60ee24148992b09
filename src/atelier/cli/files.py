"""Where the commands read photos from and write pictures to: a path, or ``-`` for stdin/stdout.

A picture written to stdout needs a format the name cannot give: ``--format`` (PNG by default).
Writing binary to a terminal is refused (it would fill the screen with bytes).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

STDIO = "-"
WRITABLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FORMATS = ("png", "jpeg", "webp")


class OutputError(ValueError):
    """An output the command cannot write (a name without a known suffix, a terminal)."""


def read_photo(source: str | Path, *, max_pixels: int, max_bytes: int) -> Image:
    """Decode the photo at ``source`` (a path, or ``-``: all of stdin), safely."""
    from atelier.art.blocks.images import decode_image

    if str(source) == STDIO:
        # One byte more than the limit: decode_image then refuses it with its own message.
        data = sys.stdin.buffer.read(max_bytes + 1)
        return decode_image(data, max_pixels=max_pixels, max_bytes=max_bytes)
    return decode_image(Path(source), max_pixels=max_pixels, max_bytes=max_bytes)


def check_output(target: str | Path, *, format: str | None = None) -> None:
    """Refuse, before any work, an output that cannot be written."""
    if str(target) == STDIO:
        if format is not None and format.lower() not in (*FORMATS, "jpg"):
            raise OutputError(f"--format takes {', '.join(FORMATS)}, not {format!r}")
        if sys.stdout.isatty():
            raise OutputError("will not write a picture to a terminal: redirect stdout (`> out.png`) or give -o FILE")
        return
    if Path(target).suffix.lower() not in WRITABLE_SUFFIXES:
        raise OutputError(f"cannot write {Path(target).name}: use a .png, .jpg or .webp output file")


def write_picture(image: Image, target: str | Path, *, format: str | None = None, quality: int = 92) -> str:
    """Write ``image`` to ``target`` (whole or not at all), or to stdout for ``-``; return
    what to call it in messages."""
    from atelier.art.blocks.images import encode_image, save_image

    if str(target) == STDIO:
        data = encode_image(image, format=(format or "png"), quality=quality)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return "stdout"
    save_image(image, Path(target), quality=quality)
    return str(target)
