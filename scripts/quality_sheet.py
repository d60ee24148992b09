#!/usr/bin/env python3
"""A contact sheet of ``atelier bench quality --keep DIR``'s pictures for one style: one row per
photo (the photo | MicroAST | the commission, at the size they were painted), and under the
pet and the portrait their eyes cropped and enlarged 3x (nearest neighbour, so that noise shows
as it is). Writes a JPEG.

    scripts/quality_sheet.py --kept /tmp/pictures --style starry_night -o docs/images/quality-before.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / "shared" / "images" / "content"

#: The eyes, as fractions of the picture (left, top, right, bottom), found by looking at the
#: photos at 256 px: the dog's face is about 35 px wide there, the portrait's eyes 100 px apart.
EYES: dict[str, tuple[float, float, float, float]] = {
    "pet": (56 / 256, 68 / 192, 116 / 256, 102 / 192),
    "portrait": (88 / 256, 88 / 256, 172 / 256, 116 / 256),
}
ZOOM = 3
PAD = 6
LABEL = 16
COLUMNS = ("photo", "MicroAST", "commission")


def _fit(image: Image.Image, size: int) -> Image.Image:
    image = image.convert("RGB")
    scale = size / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS)


def _eyes(picture: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    left, top, right, bottom = (round(f * n) for f, n in zip(box, (picture.width, picture.height) * 2))
    crop = picture.crop((left, top, right, bottom))
    return crop.resize((crop.width * ZOOM, crop.height * ZOOM), Image.Resampling.NEAREST)


def sheet(kept: Path, *, style: str, photos: dict[str, Path], size: int) -> Image.Image:
    rows: list[tuple[str, list[Image.Image]]] = []
    for label, path in photos.items():
        commission = kept / f"{label}-{style}-commission.png"
        microast = kept / f"{label}-{style}-microast.png"
        if not (commission.is_file() and microast.is_file()):
            continue
        with Image.open(path) as photo:
            pictures = [_fit(photo, size)]
        for file in (microast, commission):
            with Image.open(file) as picture:
                pictures.append(_fit(picture, size))
        rows.append((label, pictures))
        if label in EYES:
            rows.append((f"{label}: eyes {ZOOM}x", [_eyes(p, EYES[label]) for p in pictures]))
    if not rows:
        raise SystemExit(f"no pictures of style {style!r} in {kept}")
    cell = size + PAD
    height = LABEL + sum(LABEL + max(p.height for p in pictures) + PAD for _, pictures in rows)
    out = Image.new("RGB", (PAD + cell * len(COLUMNS), height), "white")
    draw = ImageDraw.Draw(out)
    for i, name in enumerate(COLUMNS):
        draw.text((PAD + i * cell, 2), name, fill="black")
    y = LABEL
    for label, pictures in rows:
        draw.text((PAD, y + 2), label, fill=(90, 90, 90))
        y += LABEL
        for i, picture in enumerate(pictures):
            x = PAD + i * cell + (size - picture.width) // 2
            out.paste(picture, (x, y))
        y += max(p.height for p in pictures) + PAD
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kept", type=Path, required=True, help="The folder given to `atelier bench quality --keep`.")
    parser.add_argument("--style", default="starry_night")
    parser.add_argument("--images", type=Path, default=IMAGES, help="Where the bench's fixed photos are.")
    parser.add_argument("--size", type=int, default=256, help="Longest side of each picture on the sheet.")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    from atelier.bench.quality import PHOTOS

    photos = {label: args.images / name for label, name in PHOTOS.items()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet(args.kept, style=args.style, photos=photos, size=args.size).save(args.output, quality=88, optimize=True)
    print(f"{args.output} ({args.output.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
