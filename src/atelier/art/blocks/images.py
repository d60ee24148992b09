"""Safe image decoding and encoding, and conversion between PIL images and tensors.

Everything a user uploads goes through :func:`decode_image`, which refuses before decoding what
it cannot or should not decode (too many bytes, too many pixels, not an image) and turns every
readable image -- whatever its mode, orientation or colour profile -- into plain sRGB.

Decisions worth knowing (each is a choice other products make the same way):

* **Alpha**: by default a transparent image is composited onto white, as if the logo or cut-out
  had been printed on paper; stylizing the raw RGB under transparent pixels would paint whatever
  garbage the encoder left there. ``keep_alpha=True`` returns RGBA instead (always RGBA, with an
  opaque alpha when the file had none) so a caller can stylize the RGB and put the alpha back.
* **Colour profiles**: an embedded ICC profile is honoured by converting the pixels to sRGB
  (LittleCMS, perceptual intent). A profile that cannot be parsed or does not fit the pixels is
  logged and ignored -- a photo is not refused for a broken profile.
* **EXIF orientation** is applied, so what the network sees is what the phone showed.
* **CMYK**: Pillow un-inverts Adobe-style (APP14) CMYK JPEGs itself while decoding, so the
  CMYK pixels are "255 = full ink" either way; with an embedded CMYK profile LittleCMS does the
  conversion, without one Pillow's naive formula does.
* **Pixel limit**: checked from the header before decoding. Pillow keeps its own process-wide
  guard (``Image.MAX_IMAGE_PIXELS``, refusing above twice that), so the effective limit is the
  smaller of the two; both surface as :class:`ImageTooLargeError`.
* **16-bit and float images**: 16-bit grey (``I;16*``) and ``I`` are scaled 0..65535 -> 0..255
  (Pillow's own ``convert("L")`` clips them, which turns most 16-bit photos white). 16-bit RGB
  PNGs are reduced to 8 bits by Pillow itself (high byte). ``F`` is taken as display-referred
  0..1. This is where we depart from "whatever Pillow does".
* **Animated images** (GIF, APNG, animated WebP): the first frame.
* **Truncated files are errors.** Pillow's ``LOAD_TRUNCATED_IMAGES`` is never set: a half-sent
  JPEG must not come back as a photo with a grey lower half.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from atelier.art.errors import ImageError

if TYPE_CHECKING:
    import torch

# torch is imported where tensors are made (to_tensor, to_pil, to_batch), not with the module:
# decoding and resizing are PIL's, and `atelier render` decodes and looks for faces in a helper
# process that should not pay the second or two of importing torch (see atelier.cli.faces_ahead).

log = logging.getLogger(__name__)

__all__ = [
    "READABLE_FORMATS",
    "WRITABLE_SUFFIXES",
    "CorruptImageError",
    "FileTooLargeError",
    "ImageTooLargeError",
    "UnsupportedImageError",
    "decode_cost",
    "decode_image",
    "encode_image",
    "fit_longest",
    "image_hash",
    "save_image",
    "to_batch",
    "to_pil",
    "to_tensor",
]


class ImageTooLargeError(ImageError):
    """The image has more pixels (width x height) than allowed."""


class FileTooLargeError(ImageError):
    """The file has more bytes than allowed."""


class UnsupportedImageError(ImageError):
    """Not an image, or an image format that is not accepted."""


class CorruptImageError(ImageError):
    """An image file that is truncated or damaged."""


# Pillow plugins tried, and only these: everything else (EPS runs Ghostscript, PSD, ICO, TGA,
# ...) is refused before any other plugin looks at the bytes. Camera JPEGs that carry an extra
# preview picture (Multi-Picture Format) come back from the JPEG plugin as format "MPO"; they
# are ordinary phone photos and are accepted.
READABLE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
_FORMAT_NAMES = "JPEG, PNG, WebP, BMP, TIFF or GIF"

# Output formats by file suffix.
WRITABLE_SUFFIXES: dict[str, str] = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}

_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


# ----------------------------------------------------------------------------- decoding


def decode_image(
    data: bytes | Path,
    *,
    max_pixels: int,
    max_bytes: int,
    keep_alpha: bool = False,
) -> Image.Image:
    """Decode an untrusted image file into an sRGB PIL image.

    ``data`` is the file's bytes or its path. Returns mode ``RGB`` (``RGBA`` with
    ``keep_alpha=True``), EXIF orientation applied, colour profile converted to sRGB, the first
    frame of an animation.

    Raises :class:`FileTooLargeError` (more than ``max_bytes``), :class:`ImageTooLargeError`
    (header says more than ``max_pixels`` pixels; checked before any pixel is decoded),
    :class:`UnsupportedImageError` (empty, not an image, or not one of JPEG, PNG, WebP, BMP,
    TIFF, GIF) or :class:`CorruptImageError` (truncated or damaged). A missing path raises
    ``FileNotFoundError`` as usual.
    """
    if max_pixels <= 0 or max_bytes <= 0:
        raise ValueError("max_pixels and max_bytes must be positive")
    raw = _read_bounded(data, max_bytes=max_bytes)
    if not raw:
        raise UnsupportedImageError("the file is empty; it is not an image")

    image = _open_checked(raw, max_pixels=max_pixels)
    fmt = image.format
    try:
        image.load()
    except Image.DecompressionBombError as exc:  # pragma: no cover - our check runs first
        raise ImageTooLargeError(_pixels_message(image.size, max_pixels)) from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on hostile input
        raise CorruptImageError(_corrupt_message(fmt, exc)) from exc
    if image.width <= 0 or image.height <= 0:
        raise CorruptImageError("the image has no pixels (its width or height is zero)")
    icc = image.info.get("icc_profile")
    try:
        result = _to_srgb(_apply_orientation(image), icc=icc, keep_alpha=keep_alpha)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - a mode/conversion Pillow cannot handle
        raise CorruptImageError(_corrupt_message(fmt, exc)) from exc
    # The result holds no reference to the in-memory file; drop Pillow's metadata that no
    # longer describes it (the profile was applied, the orientation too).
    for key in ("icc_profile", "exif", "transparency"):
        result.info.pop(key, None)
    return result


#: Bytes per pixel of the picture a mode decodes into.
_MODE_BYTES: dict[str, int] = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "RGB": 3, "YCbCr": 3, "LAB": 3,
                               "HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I": 4, "F": 4}


def decode_cost(data: bytes, *, max_pixels: int) -> int:
    """Bytes :func:`decode_image` is estimated to hold at its peak for ``data``, from the header
    alone (nothing is decoded): the decoded picture in its own mode, plus the RGB result and one
    working copy of it (orientation, profile); transparent pictures also keep their alpha and a
    white sheet to composite on; 16-bit and float pictures pass through a float64 array. Measured
    on a 6300x6300 RGB PNG: 9.2 bytes per pixel at the peak, estimated 9. 0 for what the decoder
    refuses before decoding (not an image, too many pixels): refusing costs nothing."""
    try:
        with Image.open(io.BytesIO(data), formats=list(READABLE_FORMATS)) as image:
            width, height = image.size
            mode = image.mode
    except Exception:  # noqa: BLE001 - decode_image words the refusal; here it only costs nothing
        return 0
    pixels = width * height
    if pixels <= 0 or pixels > max_pixels:
        return 0
    own = _MODE_BYTES.get(mode, 2 if mode.startswith("I;16") else 4)
    per_pixel = own + 2 * 3
    if mode in _ALPHA_MODES or mode == "P":
        per_pixel += 1 + 3
    if mode.startswith("I") or mode == "F":
        per_pixel += 8 + 1
    return pixels * per_pixel


def _read_bounded(data: bytes | Path, *, max_bytes: int) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if len(raw) > max_bytes:
            raise FileTooLargeError(_bytes_message(len(raw), max_bytes))
        return raw
    path = Path(data)
    size = path.stat().st_size
    if size > max_bytes:
        raise FileTooLargeError(_bytes_message(size, max_bytes))
    with path.open("rb") as fh:
        # Read one byte more than allowed: the file may have grown since stat().
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise FileTooLargeError(_bytes_message(len(raw), max_bytes))
    return raw


def _open_checked(raw: bytes, *, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse on the declared size before any decoding."""
    try:
        image = Image.open(io.BytesIO(raw), formats=list(READABLE_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own process-wide guard (Image.MAX_IMAGE_PIXELS) fired inside open(), before
        # we could look at .size: the effective limit is the smaller of the two. Read the size
        # again without that guard, only to word the message.
        limit = min(max_pixels, _pillow_pixel_limit(exc))
        raise ImageTooLargeError(_bomb_message(raw, exc, limit)) from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedImageError(
            f"this file is not an image Atelier can read (it accepts {_FORMAT_NAMES})"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a recognised header that is itself broken
        raise CorruptImageError(_corrupt_message(None, exc)) from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLargeError(_pixels_message((width, height), max_pixels))
    return image


def _pillow_pixel_limit(exc: BaseException) -> int:
    if Image.MAX_IMAGE_PIXELS is None:  # pragma: no cover - someone switched the guard off
        return 2**62
    # Pillow raises above twice its limit and only warns above the limit itself (a warning
    # reaches us as an exception when warnings are escalated to errors).
    factor = 2 if isinstance(exc, Image.DecompressionBombError) else 1
    return int(Image.MAX_IMAGE_PIXELS) * factor


def _apply_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:  # noqa: BLE001
        # A broken EXIF block must not cost the user their photo: keep the stored orientation.
        log.warning("ignoring unreadable EXIF orientation in a %s image", image.format)
        return image


def _to_srgb(image: Image.Image, *, icc: bytes | None, keep_alpha: bool) -> Image.Image:
    """Any Pillow mode -> RGB (or RGBA), with the embedded profile converted to sRGB."""
    image = _to_standard_mode(image)
    alpha: Image.Image | None = None
    if image.mode in ("RGBA", "LA"):
        alpha = image.getchannel("A")
        image = image.convert("RGB" if image.mode == "RGBA" else "L")
    if icc:
        image = _convert_profile(image, icc)
    if image.mode != "RGB":
        image = image.convert("RGB")  # L and CMYK (no profile): Pillow's formulas are right
    if keep_alpha:
        image = image.convert("RGBA")
        if alpha is not None:
            image.putalpha(alpha)
        return image
    if alpha is None or alpha.getextrema() == (255, 255):
        return image
    paper = Image.new("RGB", image.size, _WHITE)
    paper.paste(image, mask=alpha)
    return paper


def _to_standard_mode(image: Image.Image) -> Image.Image:
    """Bring every mode to one of L, LA, RGB, RGBA, CMYK (what colour management handles)."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey (and 32-bit int, which Pillow also uses for 16-bit data): 0..65535.
        array = np.asarray(image).astype(np.float64)
        array = np.clip(array, 0, 65535) / 257.0
        return Image.fromarray(np.rint(array).astype(np.uint8), "L")
    if mode == "F":
        array = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        return Image.fromarray(np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8), "L")
    if mode == "LAB":
        lab = ImageCms.createProfile("LAB")
        srgb = ImageCms.createProfile("sRGB")
        return ImageCms.profileToProfile(image, lab, srgb, outputMode="RGB") or image
    has_alpha = mode in _ALPHA_MODES or "transparency" in image.info
    if mode in ("L", "RGB", "CMYK") and not has_alpha:
        return image
    if mode in ("L", "LA", "La", "1"):
        return image.convert("LA" if has_alpha else "L")
    if mode == "CMYK":
        return image.convert("RGB")
    return image.convert("RGBA" if has_alpha else "RGB")


def _convert_profile(image: Image.Image, icc: bytes) -> Image.Image:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(image, source, _srgb_profile(), outputMode="RGB")
    except Exception as exc:  # noqa: BLE001 - PyCMSError, OSError, ValueError...
        log.warning("ignoring an embedded colour profile that does not apply: %s", exc)
        return image
    return converted if converted is not None else image


_SRGB: ImageCms.ImageCmsProfile | None = None


def _srgb_profile() -> ImageCms.ImageCmsProfile:
    global _SRGB
    if _SRGB is None:
        _SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return _SRGB


def _megapixels(pixels: float) -> str:
    mp = pixels / 1_000_000
    return f"{mp:.0f}" if mp >= 10 else f"{mp:.2g}"


def _pixels_message(size: tuple[int, int], max_pixels: int) -> str:
    width, height = size
    return (
        f"the image is {width}x{height} pixels ({_megapixels(width * height)} megapixels); "
        f"the limit is {_megapixels(max_pixels)} megapixels"
    )


def _bomb_message(raw: bytes, exc: BaseException, max_pixels: int) -> str:
    size = _header_size(raw)
    if size is not None:
        return _pixels_message(size, max_pixels)
    match = re.search(r"\((\d+) pixels\)", str(exc))
    if match:
        return (
            f"the image has {_megapixels(int(match.group(1)))} megapixels; "
            f"the limit is {_megapixels(max_pixels)} megapixels"
        )
    return f"the image is larger than the limit of {_megapixels(max_pixels)} megapixels"


def _header_size(raw: bytes) -> tuple[int, int] | None:
    """The declared size, read through the format plugins directly (no decompression-bomb guard).

    Only used to word a refusal; nothing is decoded.
    """
    Image.init()
    for fmt in READABLE_FORMATS:
        entry = Image.OPEN.get(fmt)
        if entry is None:
            continue
        factory, accept = entry
        try:
            if accept and not accept(raw[:16]):
                continue
            image = factory(io.BytesIO(raw), "")
            size = image.size
            image.close()
            return size
        except Exception:  # noqa: BLE001
            continue
    return None


def _bytes_message(size: int, max_bytes: int) -> str:
    return f"the file is {_human_bytes(size)}; the limit is {_human_bytes(max_bytes)}"


def _human_bytes(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) or value >= 100 else f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _corrupt_message(fmt: str | None, exc: BaseException) -> str:
    kind = f"{fmt} " if fmt else ""
    detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
    return f"the {kind}image is damaged or incomplete ({detail})"


# ----------------------------------------------------------------------------- encoding


def encode_image(image: Image.Image, *, format: str, quality: int = 92) -> bytes:
    """Encode to PNG, JPEG or WebP bytes.

    JPEG has no alpha: an RGBA image is composited onto white first (the same rule as
    decoding). PNG and WebP keep RGBA. ``quality`` (1..100) applies to JPEG and WebP; at 90 and
    above JPEG keeps full-resolution colour (4:4:4), because chroma subsampling smears the
    saturated edges that stylized pictures are full of.
    """
    fmt = format.upper().lstrip(".")
    fmt = {"JPG": "JPEG"}.get(fmt, fmt)
    if fmt not in ("PNG", "JPEG", "WEBP"):
        raise ImageError(f"cannot write {format!r} images; use PNG, JPEG or WebP")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be between 1 and 100, not {quality}")
    image = _for_output(image, allow_alpha=fmt != "JPEG")
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(
            buffer,
            "JPEG",
            quality=quality,
            optimize=True,
            progressive=True,
            subsampling=0 if quality >= 90 else 2,
        )
    elif fmt == "WEBP":
        image.save(buffer, "WEBP", quality=quality, method=4)
    else:
        image.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


def save_image(image: Image.Image, path: Path, *, quality: int = 92) -> Path:
    """Write ``image`` to ``path``, the format chosen by its suffix (.png .jpg .jpeg .webp).

    The file appears whole or not at all (written to a temporary file, then renamed).
    """
    path = Path(path)
    fmt = WRITABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(
            f"cannot write {path.name!r}: the name must end in .png, .jpg, .jpeg or .webp"
        )
    data = encode_image(image, format=fmt, quality=quality)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def _for_output(image: Image.Image, *, allow_alpha: bool) -> Image.Image:
    if image.mode == "RGB" or (allow_alpha and image.mode == "RGBA"):
        return image
    if image.mode in ("L", "LA") and allow_alpha:
        return image
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        if allow_alpha:
            return rgba
        paper = Image.new("RGB", rgba.size, _WHITE)
        paper.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return paper
    return _to_standard_mode(image).convert("RGB")


# ----------------------------------------------------------------------------- geometry, hashes


def fit_longest(image: Image.Image, size: int) -> Image.Image:
    """Resize so the longest side is ``size`` pixels, keeping the aspect ratio (Lanczos).

    Scales up as well as down. The short side is rounded and never below 1 pixel. Returns a
    new image even when the size does not change.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, not {size}")
    width, height = image.size
    longest = max(width, height)
    if longest == size:
        return image.copy()
    scale = size / longest
    if width >= height:
        new = (size, max(1, round(height * scale)))
    else:
        new = (max(1, round(width * scale)), size)
    return image.resize(new, Image.Resampling.LANCZOS)


def image_hash(data: bytes) -> str:
    """sha256 of the file's bytes, hex: the key of the content and style caches."""
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- tensors


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> a float tensor of shape (1, 3, H, W) in 0..1."""
    import torch

    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """A (1, 3, H, W) or (3, H, W) float tensor in 0..1 -> an RGB PIL image (values clamped)."""
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError("to_pil takes one image; index the batch first")
        tensor = tensor[0]
    array = tensor.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def to_batch(images: Sequence[Image.Image]) -> torch.Tensor:
    """Several RGB images of one size -> a float tensor (N, 3, H, W) in 0..1."""
    if not images:
        raise ValueError("to_batch needs at least one image")
    sizes = {image.size for image in images}
    if len(sizes) != 1:
        raise ValueError(f"a batch needs images of one size, got {sorted(sizes)}")
    import torch

    return torch.cat([to_tensor(image) for image in images], dim=0)
