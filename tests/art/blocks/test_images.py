"""Safe image I/O: every hostile or odd file is built here, in the test, never committed."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from atelier.art.errors import ImageError
from atelier.art.blocks.images import (
    CorruptImageError,
    FileTooLargeError,
    ImageTooLargeError,
    UnsupportedImageError,
    decode_cost,
    decode_image,
    encode_image,
    fit_longest,
    image_hash,
    save_image,
    to_batch,
    to_pil,
    to_tensor,
)

LIMITS = {"max_pixels": 4_000_000, "max_bytes": 20 * 1024 * 1024}


def decode(data: bytes | Path, **kwargs: object) -> Image.Image:
    return decode_image(data, **{**LIMITS, **kwargs})  # type: ignore[arg-type]


def encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def noise(width: int = 128, height: int = 96, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def hand_png(width: int, height: int, *, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written byte by byte (IHDR, one IDAT, IEND) with valid CRCs."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


# -- ICC profiles built by hand: a v2 matrix/TRC RGB profile ------------------------------------

# sRGB's primaries adapted to D50, as every sRGB ICC profile carries them.
SRGB_RED = (0.4361, 0.2225, 0.0139)
SRGB_GREEN = (0.3851, 0.7169, 0.0971)
SRGB_BLUE = (0.1431, 0.0606, 0.7141)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def rgb_icc_profile(red: tuple, green: tuple, blue: tuple, *, gamma: float) -> bytes:
    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    text = b"atelier test\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(*red)),
        (b"gXYZ", xyz(*green)),
        (b"bXYZ", xyz(*blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    start = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        body += bytes(-(start + len(body)) % 4)
        table += signature + struct.pack(">II", start + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", start + len(body))
        + bytes(4)
        + bytes([2, 0x10, 0, 0])
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + bytes(48)
    )
    assert len(header) == 128
    return header + table + body


# -- refusals --------------------------------------------------------------------------------


def test_a_png_whose_header_claims_50000x50000_is_refused_before_decoding() -> None:
    bomb = hand_png(50_000, 50_000, bit_depth=8, colour_type=2, rows=b"\0" * 64)
    assert len(bomb) < 200
    with pytest.raises(ImageTooLargeError) as caught:
        decode(bomb, max_pixels=40_000_000)
    assert "50000x50000" in str(caught.value)
    assert "40 megapixels" in str(caught.value)


def test_pillows_own_guard_is_worded_with_the_effective_limit() -> None:
    # Pillow refuses above 2 x Image.MAX_IMAGE_PIXELS inside open(), even when the caller
    # allows more; the message must still name the real size and the limit that applied.
    bomb = hand_png(50_000, 50_000, bit_depth=8, colour_type=2, rows=b"\0" * 64)
    with pytest.raises(ImageTooLargeError) as caught:
        decode(bomb, max_pixels=10**10)
    assert "50000x50000" in str(caught.value)
    assert f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels" in str(caught.value)


def test_the_pixel_limit_is_ours_not_only_pillows() -> None:
    data = encoded(noise(300, 200), "PNG")
    with pytest.raises(ImageTooLargeError, match="300x200 pixels"):
        decode(data, max_pixels=300 * 200 - 1)
    assert decode(data, max_pixels=300 * 200).size == (300, 200)


def test_a_file_over_the_byte_limit_is_refused_from_bytes_and_from_a_path(tmp_path: Path) -> None:
    data = encoded(noise(), "PNG")
    with pytest.raises(FileTooLargeError, match="limit is 1 KB"):
        decode(data, max_bytes=1024)
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    with pytest.raises(FileTooLargeError):
        decode(path, max_bytes=1024)
    assert decode(path).size == (128, 96)


def test_a_text_file_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "holiday.jpg"
    path.write_text("Dear customer, this is not a photo.\n", encoding="utf-8")
    with pytest.raises(UnsupportedImageError, match="not an image"):
        decode(path)


def test_zero_bytes_are_not_an_image() -> None:
    with pytest.raises(UnsupportedImageError, match="empty"):
        decode(b"")


def test_formats_outside_the_list_are_refused_even_when_pillow_reads_them() -> None:
    for fmt in ("ICO", "TGA", "PCX"):
        with pytest.raises(UnsupportedImageError):
            decode(encoded(noise(32, 32), fmt))


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("keep", [0.5, 0.9, -2])
def test_a_truncated_jpeg_is_an_error_not_a_grey_half(progressive: bool, keep: float) -> None:
    data = encoded(noise(256, 256), "JPEG", quality=90, progressive=progressive)
    cut = int(len(data) * keep) if keep > 0 else len(data) + int(keep)
    with pytest.raises(CorruptImageError, match="damaged or incomplete"):
        decode(data[:cut])


def test_a_truncated_png_is_an_error() -> None:
    data = encoded(noise(256, 256), "PNG")
    with pytest.raises(CorruptImageError):
        decode(data[: len(data) // 2])


def test_refusals_are_image_errors_with_one_line_messages() -> None:
    for bad in (b"", b"GIF89a garbage", encoded(noise(), "JPEG")[:300]):
        with pytest.raises(ImageError) as caught:
            decode(bad)
        assert "\n" not in str(caught.value)


# -- formats and modes -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_decode_to_the_same_pixels(fmt: str) -> None:
    source = noise(64, 48)
    params = {"lossless": True} if fmt == "WEBP" else {}
    image = decode(encoded(source, fmt, **params))
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), np.asarray(source))


def test_a_jpeg_decodes_close_to_its_source() -> None:
    source = Image.new("RGB", (64, 64), (30, 120, 220))
    image = decode(encoded(source, "JPEG", quality=95))
    assert np.abs(np.asarray(image, dtype=int) - (30, 120, 220)).max() <= 3


def test_a_cmyk_jpeg_comes_back_in_the_right_colours() -> None:
    # Pillow writes CMYK JPEGs the Adobe way (inverted, with an APP14 marker) and reads them
    # back un-inverted; so pure magenta+yellow ink must be red, and K-only must be grey.
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))
    cmyk.paste((0, 0, 0, 128), (16, 0, 32, 32))
    data = encoded(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).info.get("adobe") is not None
    image = decode(data)
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image.getpixel((4, 4))) - (255, 0, 0)).max() <= 4
    assert np.abs(np.asarray(image.getpixel((28, 4))) - (127, 127, 127)).max() <= 4


def test_a_16_bit_grey_png_is_scaled_not_clipped() -> None:
    levels = np.array([0, 257, 32896, 40000, 65535], dtype=np.uint16)
    rows = b"".join(b"\0" + levels.astype(">u2").tobytes() for _ in range(2))
    image = decode(hand_png(5, 2, bit_depth=16, colour_type=0, rows=rows))
    assert image.mode == "RGB"
    grey = np.asarray(image)[0, :, 0]
    assert grey.tolist() == [0, 1, 128, round(40000 / 257), 255]
    assert np.asarray(image)[0, 2].tolist() == [128, 128, 128]


def test_a_16_bit_rgb_png_keeps_its_colours() -> None:
    pixel = np.array([65535, 32896, 0], dtype=np.uint16)
    rows = b"".join(b"\0" + np.tile(pixel, 3).astype(">u2").tobytes() for _ in range(3))
    image = decode(hand_png(3, 3, bit_depth=16, colour_type=2, rows=rows))
    assert image.getpixel((1, 1)) == (255, 128, 0)


def test_32_bit_integer_and_float_tiffs_are_scaled() -> None:
    ints = Image.fromarray(np.array([[0, 65535, 32896]], dtype=np.int32), "I")
    assert np.asarray(decode(encoded(ints, "TIFF")))[0, :, 0].tolist() == [0, 255, 128]
    floats = Image.fromarray(np.array([[0.0, 1.0, 0.5, 2.0, -1.0]], dtype=np.float32), "F")
    assert np.asarray(decode(encoded(floats, "TIFF")))[0, :, 0].tolist() == [0, 255, 128, 255, 0]


def test_a_palette_png_with_transparency_is_composited_on_white() -> None:
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (8, 0, 16, 16))
    data = encoded(palette, "PNG", transparency=0)
    image = decode(data)
    assert image.mode == "RGB"
    assert image.getpixel((2, 2)) == (255, 255, 255)  # transparent red -> the white paper
    assert image.getpixel((12, 2)) == (0, 0, 255)
    kept = decode(data, keep_alpha=True)
    assert kept.mode == "RGBA"
    assert kept.getpixel((2, 2))[3] == 0 and kept.getpixel((12, 2)) == (0, 0, 255, 255)


def test_a_palette_png_without_transparency_is_plain_rgb() -> None:
    palette = noise(32, 32).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image = decode(encoded(palette, "PNG"))
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), np.asarray(palette.convert("RGB")))


def test_half_transparent_rgba_is_blended_with_white() -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 128))
    image = decode(encoded(rgba, "PNG"))
    assert np.abs(np.asarray(image.getpixel((0, 0))) - 127).max() <= 1
    kept = decode(encoded(rgba, "PNG"), keep_alpha=True)
    assert kept.getpixel((0, 0)) == (0, 0, 0, 128)


def test_keep_alpha_on_an_opaque_image_gives_an_opaque_rgba() -> None:
    image = decode(encoded(noise(16, 16), "JPEG"), keep_alpha=True)
    assert image.mode == "RGBA"
    assert image.getchannel("A").getextrema() == (255, 255)


def test_grey_and_grey_with_alpha() -> None:
    grey = Image.new("L", (8, 8), 77)
    assert decode(encoded(grey, "PNG")).getpixel((0, 0)) == (77, 77, 77)
    la = Image.new("LA", (8, 8), (0, 0))
    la.paste((0, 255), (4, 0, 8, 8))
    image = decode(encoded(la, "PNG"))
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((6, 0)) == (0, 0, 0)


def test_a_bilevel_image_decodes() -> None:
    bilevel = Image.new("1", (8, 8), 1)
    assert decode(encoded(bilevel, "PNG")).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_an_animation_gives_its_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (24, 24), colour) for colour in ((220, 20, 20), (20, 220, 20))]
    params = {"lossless": True} if fmt == "WEBP" else {}
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **params)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    pixel = np.asarray(decode(data).getpixel((12, 12)), dtype=int)
    assert np.abs(pixel - (220, 20, 20)).max() <= 8


def test_exif_orientation_6_rotates_the_pixels_clockwise() -> None:
    # Stored 40x20: top half red, bottom half blue. Orientation 6 says "rotate 90 degrees
    # clockwise to display": the stored top edge becomes the right edge.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 40, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    image = decode(encoded(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert image.size == (20, 40)
    right, left = np.asarray(image.getpixel((16, 20))), np.asarray(image.getpixel((3, 20)))
    assert right[0] > 200 and right[2] < 60
    assert left[2] > 200 and left[0] < 60


def test_an_embedded_profile_with_swapped_primaries_swaps_red_and_blue() -> None:
    # A profile that says "my red channel is sRGB's blue": stored red must be shown blue.
    swapped = rgb_icc_profile(SRGB_BLUE, SRGB_GREEN, SRGB_RED, gamma=2.2)
    data = encoded(Image.new("RGB", (8, 8), (200, 30, 30)), "PNG", icc_profile=swapped)
    red, green, blue = decode(data).getpixel((0, 0))
    assert blue > 190 and red < 40 and green < 40


def test_an_embedded_linear_profile_is_converted_to_srgb_tones() -> None:
    # Linear-light 0.5 is sRGB 188: without colour management the picture would look dark.
    linear = rgb_icc_profile(SRGB_RED, SRGB_GREEN, SRGB_BLUE, gamma=1.0)
    data = encoded(Image.new("RGB", (8, 8), (128, 128, 128)), "JPEG", quality=100, icc_profile=linear)
    assert np.abs(np.asarray(decode(data).getpixel((0, 0))) - 188).max() <= 2


def test_a_broken_profile_is_ignored_not_fatal() -> None:
    data = encoded(Image.new("RGB", (8, 8), (10, 200, 30)), "PNG", icc_profile=b"not a profile" * 10)
    assert decode(data).getpixel((0, 0)) == (10, 200, 30)


def test_a_real_photo_round_trips(content_dir: Path, tmp_path: Path) -> None:
    path = content_dir / "brad_pitt.jpg"
    photo = decode(path, max_bytes=path.stat().st_size)
    assert photo.mode == "RGB" and photo.size == Image.open(path).size
    out = save_image(photo, tmp_path / "out.png")
    again = decode(out)
    assert np.array_equal(np.asarray(again), np.asarray(photo))
    jpeg = decode(encode_image(photo, format="jpeg", quality=95))
    diff = np.asarray(jpeg, dtype=float) - np.asarray(photo, dtype=float)
    psnr = 10 * np.log10(255**2 / np.mean(diff**2))
    assert psnr > 35, psnr


# -- encoding --------------------------------------------------------------------------------


def test_save_image_chooses_the_format_by_extension(tmp_path: Path) -> None:
    image = noise(32, 16)
    for name, fmt in (("a.png", "PNG"), ("b.JPG", "JPEG"), ("c.jpeg", "JPEG"), ("d.webp", "WEBP")):
        path = save_image(image, tmp_path / name)
        assert Image.open(path).format == fmt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.JPG", "c.jpeg", "d.webp"]


def test_save_image_refuses_other_extensions(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"\.png, \.jpg"):
        save_image(noise(), tmp_path / "out.gif")
    assert not any(tmp_path.iterdir())


def test_jpeg_output_has_no_alpha_and_transparent_parts_turn_white() -> None:
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    data = encode_image(rgba, format="JPEG")
    image = Image.open(io.BytesIO(data))
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image.getpixel((8, 8))) - 255).max() <= 2
    png = Image.open(io.BytesIO(encode_image(rgba, format="png")))
    assert png.mode == "RGBA"


def test_encode_refuses_unknown_formats() -> None:
    with pytest.raises(ImageError):
        encode_image(noise(), format="GIF")


# -- geometry, hashes, tensors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "target", "expected"),
    [((400, 300), 200, (200, 150)), ((300, 400), 200, (150, 200)), ((100, 50), 300, (300, 150)),
     ((1000, 1), 100, (100, 1)), ((64, 64), 64, (64, 64))],
)
def test_fit_longest_keeps_the_aspect_ratio(size: tuple, target: int, expected: tuple) -> None:
    image = Image.new("RGB", size)
    result = fit_longest(image, target)
    assert result.size == expected
    assert result is not image


def test_fit_longest_resamples_with_lanczos() -> None:
    image = noise(200, 100)
    assert np.array_equal(
        np.asarray(fit_longest(image, 50)), np.asarray(image.resize((50, 25), Image.Resampling.LANCZOS))
    )


def test_image_hash_is_the_sha256_of_the_bytes() -> None:
    assert image_hash(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_tensors_round_trip_and_batch() -> None:
    images = [noise(20, 12, seed=s) for s in range(3)]
    batch = to_batch(images)
    assert batch.shape == (3, 3, 12, 20) and batch.dtype == torch.float32
    assert 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0
    for index, image in enumerate(images):
        assert np.array_equal(np.asarray(to_pil(batch[index])), np.asarray(image))
        assert torch.equal(to_tensor(image), batch[index : index + 1])
    with pytest.raises(ValueError):
        to_batch([noise(20, 12), noise(12, 20)])


# -- fuzz ------------------------------------------------------------------------------------

_SEEDS = {
    "png": encoded(noise(24, 16, seed=3), "PNG"),
    "jpeg": encoded(noise(24, 16, seed=4), "JPEG", quality=80),
    "rgba-png": encoded(Image.new("RGBA", (12, 12), (9, 99, 199, 99)), "PNG"),
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(sorted(_SEEDS)),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
)
def test_mutated_files_decode_or_raise_an_image_error(seed: str, edits: list, cut: int | None) -> None:
    data = bytearray(_SEEDS[seed])
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    try:
        image = decode_image(bytes(data), max_pixels=1_000_000, max_bytes=1_000_000)
    except ImageError:
        return
    assert image.mode == "RGB"
    assert image.width > 0 and image.height > 0


def _flat_png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_decoding_cost_is_estimated_from_the_header_alone() -> None:
    assert decode_cost(_flat_png(1000, 500), max_pixels=10**8) == 1000 * 500 * 9
    # Transparency keeps the alpha and a sheet to composite on.
    assert decode_cost(_flat_png(1000, 500, "RGBA"), max_pixels=10**8) == 1000 * 500 * 14
    # What the decoder refuses before decoding costs nothing.
    assert decode_cost(_flat_png(1000, 500), max_pixels=1000) == 0
    assert decode_cost(b"not an image", max_pixels=10**8) == 0
