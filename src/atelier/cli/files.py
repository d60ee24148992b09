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
#: What a folder given as input is searched for (not recursively): the formats decode_image takes.
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


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


def expand_inputs(sources: list[str]) -> tuple[list[str], bool]:
    """The photos ``sources`` name (files, ``-``, or folders: their photos, sorted by name), and
    whether they make a batch (a folder, or more than one source: the output is then a folder)."""
    photos: list[str] = []
    batch = len(sources) > 1
    for source in sources:
        path = Path(source)
        if source != STDIO and path.is_dir():
            batch = True
            photos.extend(str(p) for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
        else:
            photos.append(source)
    if batch and STDIO in photos:
        raise OutputError("- (stdin) is one photo: give it alone")
    return photos, batch


def batch_outputs(photos: list[str], folder: Path, *, format: str | None) -> list[Path]:
    """Where each photo of a batch is written in ``folder``: its name with the format's suffix
    (``--format``; default: the photo's own when it can be written, else .png), ``-2``, ``-3``...
    when two photos share a name; never a photo's own file."""
    suffixes = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg", "webp": ".webp"}
    if format is not None and format.lower() not in suffixes:
        raise OutputError(f"--format takes {', '.join(FORMATS)}, not {format!r}")
    taken: set[Path] = set()
    inputs = {Path(p).resolve() for p in photos}
    outputs = []
    for photo in photos:
        source = Path(photo)
        own = source.suffix.lower()
        suffix = suffixes[format.lower()] if format else (own if own in WRITABLE_SUFFIXES else ".png")
        candidate, n = folder / f"{source.stem}{suffix}", 1
        while candidate in taken or candidate.resolve() in inputs:
            n += 1
            candidate = folder / f"{source.stem}-{n}{suffix}"
        taken.add(candidate)
        outputs.append(candidate)
    return outputs
