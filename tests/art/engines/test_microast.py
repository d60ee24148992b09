"""MicroAST on the official weights: fidelity to the official network, the style really moving,
alpha, caching, batches, sizes, exact tiles, masks, style mixtures, colour, ultra-resolution."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from atelier.art.engines.protocol import StyleEngine
from atelier.art.errors import ArtError, ImageError, ModelError, ModelMissingError
from atelier.art.blocks.images import to_tensor
from atelier.art.engines.microast import MicroAST, MicroASTContent, MicroASTStyle, load_microast
from atelier.art.progress import Progress

PARTS = ("content_encoder", "style_encoder", "modulator", "decoder")
REPO = Path(__file__).resolve().parents[3]


def weight_files(models_dir: Path) -> dict[str, Path]:
    return {part: models_dir / "microast" / f"{part}_iter_160000.pth.tar" for part in PARTS}


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> MicroAST:
    return load_microast(**weight_files(models_dir))


def image(folder: Path, name: str, size: tuple[int, int]) -> torch.Tensor:
    return to_tensor(Image.open(folder / name).convert("RGB").resize(size, Image.BICUBIC))


@pytest.fixture(scope="module")
def dog(content_dir: Path) -> torch.Tensor:
    return image(content_dir, "dog.jpg", (256, 192))


@pytest.fixture(scope="module")
def starry(style_dir: Path) -> torch.Tensor:
    return image(style_dir, "starry_night.jpg", (256, 160))


@pytest.fixture(scope="module")
def mondrian(style_dir: Path) -> torch.Tensor:
    return image(style_dir, "mondrian.jpg", (256, 234))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / float(F.mse_loss(a, b)))


def colour_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of the per-channel RGB means and standard deviations."""
    mean = (a.mean((2, 3)) - b.mean((2, 3))).abs().mean()
    std = (a.std((2, 3)) - b.std((2, 3))).abs().mean()
    return float(mean + std)


# -- a fixed feature extractor for texture: the normalised VGG-19 up to relu2_1 ------------------


@pytest.fixture(scope="module")
def vgg_state(models_dir: Path) -> dict[str, torch.Tensor]:
    path = models_dir / "vgg" / "vgg_normalised_conv2_1.pth"
    return torch.load(path, map_location="cpu", weights_only=True)


def vgg_features(state: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    def conv(x: torch.Tensor, i: int) -> torch.Tensor:
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.relu(F.conv2d(padded, state[f"{i}.weight"], state[f"{i}.bias"]))

    x = F.conv2d(x, state["0.weight"], state["0.bias"])
    relu1_1 = conv(x, 2)
    relu2_1 = conv(F.max_pool2d(conv(relu1_1, 5), 2), 9)
    return [relu1_1, relu2_1]


def gram(f: torch.Tensor) -> torch.Tensor:
    n, c, h, w = f.shape
    flat = f.reshape(n * c, h * w)
    return flat @ flat.T / (h * w)


def texture_distance(state: dict[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative Gram-matrix distance at relu1_1 and relu2_1 (Gatys et al.'s style measure)."""
    total = 0.0
    for fa, fb in zip(vgg_features(state, a), vgg_features(state, b)):
        ga, gb = gram(fa), gram(fb)
        total += float((ga - gb).norm() / gb.norm())
    return total


# -- an independent transcription of the official forward pass (net_microAST.TestNet) -----------


def official_forward(models_dir: Path, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    sd = {
        part: torch.load(path, map_location="cpu", weights_only=True)
        for part, path in weight_files(models_dir).items()
    }

    def conv(x: torch.Tensor, part: str, name: str, stride: int = 1) -> torch.Tensor:
        w, b = sd[part][f"{name}.conv_layer.weight"], sd[part][f"{name}.conv_layer.bias"]
        k = w.shape[-1]
        padded = F.pad(x, (k // 2,) * 4, mode="reflect")
        return F.conv2d(padded, w, b, stride, groups=x.shape[1] // w.shape[1])

    def residual(x, part, name, w=None, b=None):  # type: ignore[no-untyped-def]
        y1 = conv(x, part, f"{name}.conv1")
        if w is None:
            return x + conv(F.relu(y1), part, f"{name}.conv2")
        y3 = F.relu(w * y1 + b * x)
        return x + w * conv(y3, part, f"{name}.conv2") + b * y3

    def encode(x: torch.Tensor, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        for name, stride in (("enc1.0", 1), ("enc1.2", 2), ("enc1.4", 1), ("enc1.6", 2), ("enc1.8", 1)):
            x = F.relu(conv(x, part, name, stride))
        f1 = residual(x, part, "enc1.10")
        return f1, residual(f1, part, "enc2.0")

    def mean_std(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = f.flatten(2)
        return flat.mean(2)[..., None, None], (flat.var(2) + 1e-5).sqrt()[..., None, None]

    def adain(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        (cm, cs), (sm, ss) = mean_std(c), mean_std(s)
        return (c - cm) / cs * ss + sm

    with torch.inference_mode():
        s1, s2 = encode(style, "style_encoder")
        w1, b1 = (conv(s1, "modulator", f"{n}.0").mean((2, 3), keepdim=True) for n in ("weight1", "bias1"))
        w2, b2 = (conv(s2, "modulator", f"{n}.0").mean((2, 3), keepdim=True) for n in ("weight2", "bias2"))
        _, c2 = encode(content, "content_encoder")
        x = residual(adain(c2, s2), "decoder", "dec1", w2, b2)
        x = residual(adain(x, s1), "decoder", "dec2", w1, b1)
        for first in (1, 6):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = F.relu(conv(x, "decoder", f"dec3.{first}"))
            x = F.relu(conv(x, "decoder", f"dec3.{first + 2}"))
        return conv(x, "decoder", "dec3.10").clamp(0, 1)


# -- the tests ------------------------------------------------------------------------------------


def test_it_is_a_style_engine(engine: MicroAST) -> None:
    assert isinstance(engine, StyleEngine)
    assert engine.name == "microast"


def test_the_official_weights_give_the_official_result(
    engine: MicroAST, models_dir: Path, dog: torch.Tensor, starry: torch.Tensor
) -> None:
    ours = engine.stylize(dog, starry)
    theirs = official_forward(models_dir, dog, starry)
    assert ours.shape == theirs.shape == dog.shape
    assert float((ours - theirs).abs().max()) < 1e-4


@pytest.mark.parametrize(
    ("photo", "painting", "photo_size", "painting_size"),
    [
        ("dog.jpg", "starry_night.jpg", (512, 384), (512, 320)),
        ("golden_gate.jpg", "mondrian.jpg", (384, 384), (420, 384)),
    ],
)
def test_colour_and_texture_move_toward_the_style(
    engine: MicroAST,
    content_dir: Path,
    style_dir: Path,
    vgg_state: dict[str, torch.Tensor],
    photo: str,
    painting: str,
    photo_size: tuple[int, int],
    painting_size: tuple[int, int],
) -> None:
    content = image(content_dir, photo, photo_size)
    style = image(style_dir, painting, painting_size)
    out = engine.stylize(content, style)
    # Measured: colour 0.16 -> 0.05 and 0.18 -> 0.02; texture 1.5 -> 0.3 and 1.6 -> 0.4.
    assert colour_distance(out, style) < 0.5 * colour_distance(content, style)
    assert texture_distance(vgg_state, out, style) < 0.5 * texture_distance(vgg_state, content, style)
    # ... and it is still the photo: far closer in structure to it than to a shuffled copy.
    shuffled = content.flip(-1).flip(-2)
    assert texture_distance(vgg_state, out, content) < 10.0
    assert float(F.mse_loss(out, content)) < float(F.mse_loss(out, shuffled))


def test_alpha_zero_is_the_photo_painted_with_itself_and_alpha_moves_toward_the_style(
    engine: MicroAST, dog: torch.Tensor, starry: torch.Tensor
) -> None:
    features = engine.encode_content(dog)
    style = engine.encode_style(starry)
    at = {alpha: engine.decode(features, [style], alpha=alpha) for alpha in (0.0, 0.5, 1.0)}
    # alpha=0 is the reconstruction path: the photo used as its own style (measured 22 dB).
    itself = engine.decode(features, [engine.encode_style(dog)])
    assert float((at[0.0] - itself).abs().max()) < 1e-4
    assert psnr(at[0.0], dog) > 19.0
    # Monotone in between: further from the photo, nearer the painting's colours.
    assert psnr(at[0.0], dog) > psnr(at[0.5], dog) + 1.5 > psnr(at[1.0], dog) + 3.0
    distances = [colour_distance(at[a], starry) for a in (0.0, 0.5, 1.0)]
    assert distances[0] > distances[1] > distances[2]
    # Every alpha stays an image of the photo, not a flat wash (upstream's blend gives one).
    assert all(float(out.std()) > 0.1 for out in at.values())


def test_cached_photo_features_serve_several_styles(
    engine: MicroAST, dog: torch.Tensor, starry: torch.Tensor, mondrian: torch.Tensor
) -> None:
    features = engine.encode_content(dog)
    for style in (starry, mondrian, starry):
        cached = engine.decode(features, [engine.encode_style(style)], alpha=0.8)
        fresh = engine.stylize(dog, style, alpha=0.8)
        assert torch.equal(cached, fresh)
    assert isinstance(features, MicroASTContent)


def test_a_batch_equals_its_photos_one_by_one(
    engine: MicroAST, dog: torch.Tensor, content_dir: Path, starry: torch.Tensor
) -> None:
    other = image(content_dir, "golden_gate.jpg", (256, 192))
    for alpha in (1.0, 0.6):
        batch = engine.stylize(torch.cat([dog, other]), starry, alpha=alpha)
        assert float((batch[0:1] - engine.stylize(dog, starry, alpha=alpha)).abs().max()) < 1e-5
        assert float((batch[1:2] - engine.stylize(other, starry, alpha=alpha)).abs().max()) < 1e-5


def test_odd_sizes_come_back_at_their_exact_size(
    engine: MicroAST, content_dir: Path, starry: torch.Tensor
) -> None:
    style = engine.encode_style(starry)
    for width, height in [(101, 67), (33, 50), (130, 97)]:
        photo = image(content_dir, "dog.jpg", (width, height))
        out = engine.decode(engine.encode_content(photo), [style])
        assert out.shape == (1, 3, height, width)
        assert float(out[..., -2:, :].std()) > 0.02 and float(out[..., :, -2:].std()) > 0.02
    # Tiles smaller than the image change nothing, odd edges included.
    tiled = engine.decode(engine.encode_content(photo, tile=64), [style], tile=64)
    assert tiled.shape == out.shape and float((tiled - out).abs().max()) < 1e-4


@pytest.mark.parametrize("size", [(642, 430), (430, 642)])
def test_a_large_picture_s_decoder_tail_runs_in_bands_that_change_nothing(
    engine: MicroAST, content_dir: Path, starry: torch.Tensor, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]
) -> None:
    # The last, full-resolution stages hold most of the decoder's memory: past a size they run
    # in bands of one shape across the longer side (a lower peak for a few percent of work).
    from atelier.art.engines import microast

    photo = image(content_dir, "kite.jpg", size)  # not multiples of 4 either
    style = engine.encode_style(starry)
    content = engine.encode_content(photo)
    monkeypatch.setattr(microast, "AUTO_TAIL_TILE_PIXELS", 10**9)
    whole = engine.decode(content, [style])
    bands: list[int] = []
    tiles_of = microast._tail_tiles

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        made = tiles_of(*args, **kwargs)
        bands.append(len(made))
        return made

    monkeypatch.setattr(microast, "AUTO_TAIL_TILE_PIXELS", 100_000)
    monkeypatch.setattr(microast, "_tail_tiles", counting)
    banded = engine.decode(content, [style])
    assert bands[-1] == 3  # the tail's tiles: 644 x 432 padded pixels in bands of at most 100 000
    # Bands across the longer side, each the whole of the shorter one (quarter-resolution units).
    tall = size[1] > size[0]
    quarter = (-(-size[1] // 4), -(-size[0] // 4))  # (rows, columns), padded to multiples of 4
    for band in microast._tail_tiles(*quarter, max(quarter), 8, tile=None, batch=1):
        assert (band.x0, band.x1) == (0, quarter[1]) if tall else (band.y0, band.y1) == (0, quarter[0])
    assert banded.shape == whole.shape and float((banded - whole).abs().max()) < 1e-4


@pytest.mark.parametrize("size", [(642, 430), (430, 642)])
def test_a_large_picture_s_encoder_front_runs_in_bands_that_change_nothing(
    engine: MicroAST, content_dir: Path, starry: torch.Tensor, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]
) -> None:
    # The encoders' full-resolution front (9x9 conv, first stride-2 conv) holds most of an
    # encoding's memory: past a size it runs in bands across the longer side, with halos.
    from atelier.art.engines import microast

    photo = image(content_dir, "kite.jpg", size)
    monkeypatch.setattr(microast, "AUTO_FRONT_BAND_PIXELS", 10**9)
    whole = engine.encode_content(photo).features
    whole_style = engine.encode_style(photo)
    monkeypatch.setattr(microast, "AUTO_FRONT_BAND_PIXELS", 60_000)
    banded = engine.encode_content(photo).features
    banded_style = engine.encode_style(photo)
    assert banded.shape == whole.shape and float((banded - whole).abs().max()) < 1e-5
    assert float((banded_style.mean1 - whole_style.mean1).abs().max()) < 1e-5


def test_bands_read_windows_of_one_size_inside_the_picture() -> None:
    # One shape for oneDNN's set-up and the allocator's reuse; each band's own rows covered once,
    # with at least the halo of real pixels on every side that is not the picture's edge.
    from atelier.art.engines.microast import _bands

    for length, step, halo in [(256, 86, 8), (1024, 344, 8), (100, 100, 8), (90, 40, 30)]:
        bands = _bands(length, step, halo)
        assert len({hi - lo for _, _, lo, hi in bands}) == 1
        assert [b[0] for b in bands] == list(range(0, length, step)) and bands[-1][1] == length
        for start, stop, lo, hi in bands:
            assert 0 <= lo and hi <= length
            assert lo == 0 or lo <= start - halo
            assert hi == length or hi >= stop + halo


def test_tiles_leave_no_seams(engine: MicroAST, content_dir: Path, starry: torch.Tensor) -> None:
    photo = image(content_dir, "kite.jpg", (642, 430))  # not multiples of 4 either
    style = engine.encode_style(starry)
    whole = engine.decode(engine.encode_content(photo), [style])
    tiled = engine.decode(engine.encode_content(photo, tile=128), [style], tile=128)
    assert psnr(tiled, whole) > 50.0
    # No step along the tile borders: the jump across each border column/row is the untiled one.
    for border in range(128, 642, 128):
        step_tiled = (tiled[..., border] - tiled[..., border - 1]).abs().mean()
        step_whole = (whole[..., border] - whole[..., border - 1]).abs().mean()
        assert float((step_tiled - step_whole).abs()) < 1e-4
    for border in range(128, 430, 128):
        step_tiled = (tiled[..., border, :] - tiled[..., border - 1, :]).abs().mean()
        step_whole = (whole[..., border, :] - whole[..., border - 1, :]).abs().mean()
        assert float((step_tiled - step_whole).abs()) < 1e-4


def test_a_mask_paints_each_region_with_its_own_style(
    engine: MicroAST, dog: torch.Tensor, starry: torch.Tensor, mondrian: torch.Tensor
) -> None:
    features = engine.encode_content(dog)
    styles = [engine.encode_style(starry), engine.encode_style(mondrian)]
    height, width = dog.shape[-2:]
    mask = torch.zeros(height, width)
    mask[:, : width // 2] = 1.0  # style 0 on the left, style 1 on the right
    out = engine.decode(features, styles, mask=mask)
    only = [engine.decode(features, [s]) for s in styles]
    left, right = slice(0, width // 2 - 16), slice(width // 2 + 16, width)
    # Each half is near its style's full stylization (not equal: the photo's statistics are
    # taken per region) and far from the other style's (measured ratios 0.34 and below).
    for half, mine, other in ((left, only[0], only[1]), (right, only[1], only[0])):
        painted = out[..., half]
        assert colour_distance(painted, mine[..., half]) < 0.5 * colour_distance(painted, other[..., half])
    # Tiles do not change masked results either.
    tiled = engine.decode(engine.encode_content(dog, tile=64), styles, mask=mask, tile=64)
    assert float((tiled - out).abs().max()) < 1e-4
    # A mask that selects the one style everywhere is no mask.
    everywhere = engine.decode(features, styles[:1], mask=torch.ones(height, width))
    assert float((everywhere - only[0]).abs().max()) < 1e-4


def test_a_one_style_mask_keeps_the_photo_elsewhere(
    engine: MicroAST, dog: torch.Tensor, starry: torch.Tensor
) -> None:
    height, width = dog.shape[-2:]
    mask = torch.zeros(1, 1, height, width)
    mask[..., : width // 2] = 1.0
    out = engine.stylize(dog, starry, mask=mask)
    left, right = slice(0, width // 2 - 16), slice(width // 2 + 16, width)
    assert psnr(out[..., right], dog[..., right]) > psnr(out[..., left], dog[..., left]) + 4.0


def test_style_weights_mix_the_styles(
    engine: MicroAST, dog: torch.Tensor, starry: torch.Tensor, mondrian: torch.Tensor
) -> None:
    features = engine.encode_content(dog)
    styles = [engine.encode_style(starry), engine.encode_style(mondrian)]
    first = engine.decode(features, styles[:1])
    assert float((engine.decode(features, styles, style_weights=[3.0, 0.0]) - first).abs().max()) < 1e-5
    second = engine.decode(features, styles[1:])
    mixed = engine.decode(features, styles, style_weights=[1.0, 1.0])
    apart = colour_distance(first, second)
    assert colour_distance(mixed, first) < apart and colour_distance(mixed, second) < apart
    assert float((mixed - first).abs().mean()) > 0.02 and float((mixed - second).abs().mean()) > 0.02


def test_preserve_color_keeps_the_photos_colours(
    engine: MicroAST, dog: torch.Tensor, starry: torch.Tensor
) -> None:
    plain = engine.stylize(dog, starry)
    kept = engine.stylize(dog, starry, preserve_color=True)
    assert colour_distance(kept, dog) < 0.5 * colour_distance(plain, dog)
    assert float((kept - dog).abs().mean()) > 0.03  # still painted


def test_pil_images_in_pil_image_out(engine: MicroAST, content_dir: Path, style_dir: Path) -> None:
    photo = Image.open(content_dir / "harriet_128x128.jpg").resize((90, 70))
    out = engine.stylize(photo, Image.open(style_dir / "mosaic.jpg"))
    assert isinstance(out, Image.Image) and out.size == (90, 70) and out.mode == "RGB"


def test_progress_is_reported(engine: MicroAST, dog: torch.Tensor, starry: torch.Tensor) -> None:
    seen: list[Progress] = []
    engine.stylize(dog, starry, progress=seen.append, tile=128)
    stages = {p.stage for p in seen}
    assert {"encode", "decode"} <= stages
    assert seen[-1].stage == "decode" and seen[-1].fraction == 1.0


def test_bad_requests_are_refused_with_typed_errors(
    engine: MicroAST, dog: torch.Tensor, starry: torch.Tensor
) -> None:
    features = engine.encode_content(dog)
    style = engine.encode_style(starry)
    with pytest.raises(ArtError, match="alpha"):
        engine.decode(features, [style], alpha=1.5)
    with pytest.raises(ArtError, match="same size"):
        engine.decode(features, [style], mask=torch.ones(10, 10))
    with pytest.raises(ArtError, match="not both"):
        engine.decode(features, [style, style], style_weights=[1, 1], mask=torch.ones(dog.shape[-2:]))
    with pytest.raises(ArtError, match="weight"):
        engine.decode(features, [style, style], style_weights=[1.0])
    with pytest.raises(ImageError):
        engine.encode_content(torch.rand(1, 3, 5, 64))
    with pytest.raises(ArtError, match="tile"):
        engine.encode_content(dog, tile=30)


def test_wrong_or_missing_weights_are_refused(models_dir: Path, tmp_path: Path) -> None:
    files = weight_files(models_dir)
    with pytest.raises(ModelError, match="modulator"):
        load_microast(**{**files, "modulator": files["decoder"]})
    with pytest.raises(ModelError, match="decoder"):
        load_microast(**{**files, "decoder": models_dir / "fast_neural_style" / "candy.pth"})
    with pytest.raises(ModelMissingError, match="atelier models download"):
        load_microast(**{**files, "content_encoder": tmp_path / "absent.pth.tar"})


def test_a_cached_style_is_a_few_vectors(engine: MicroAST, starry: torch.Tensor) -> None:
    style = engine.encode_style(starry)
    assert isinstance(style, MicroASTStyle)
    assert all(getattr(style, name).shape == (64,) for name in MicroASTStyle._FIELDS)


ULTRA_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    import torch
    from PIL import Image
    from atelier.art.blocks.images import to_tensor
    from atelier.art.engines.microast import load_microast

    models, photo, painting = sys.argv[1:4]
    parts = ("content_encoder", "style_encoder", "modulator", "decoder")
    engine = load_microast(**{p: f"{models}/microast/{p}_iter_160000.pth.tar" for p in parts})
    content = to_tensor(Image.open(photo).convert("RGB"))
    style = to_tensor(Image.open(painting).convert("RGB").resize((512, 320)))
    start = time.perf_counter()
    out = engine.stylize(content, style)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({"shape": list(out.shape), "std": float(out.std()), "peak": peak, "seconds": seconds}))
    """
)


@pytest.mark.slow
def test_a_3415x2160_photo_stylizes_in_under_3_gb(
    models_dir: Path, content_dir: Path, style_dir: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            ULTRA_SCRIPT,
            str(models_dir),
            str(content_dir / "microast_harbor_3415x2160.jpg"),
            str(style_dir / "starry_night.jpg"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [1, 3, 2160, 3415]
    assert report["std"] > 0.1
    assert report["peak"] < 3 * 1024**3, report
