"""waifu2x upscaling: agreement with the real ncnn runtime, exact sizes, seamless tiles, memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.art.errors import ImageError, ModelError, ModelMissingError
from atelier.art.blocks.images import to_pil, to_tensor
from atelier.art.engines.upscale import MODELS, Upscaler
from atelier.install.models import waifu2x_files

ncnn = pytest.importorskip("ncnn")

_CACHE: dict[tuple[str, int, int], Upscaler] = {}


def _upscaler(models_dir: Path, model: str, noise: int = -1, scale: int = 2) -> Upscaler:
    key = (model, noise, scale)
    if key not in _CACHE:
        _CACHE[key] = Upscaler.load(waifu2x_files(model, noise=noise, scale=scale, models_dir=models_dir))
    return _CACHE[key]


@pytest.fixture(scope="module")
def butterfly(content_dir: Path) -> Image.Image:
    # Odd on both sides on purpose: cunet needs even sides and must pad, then crop, like ncnn.
    with Image.open(content_dir / "butterfly.png") as image:
        return image.convert("RGB").resize((75, 61), Image.Resampling.BICUBIC)


def _ncnn_upscale(param: Path, weights: Path, image: Image.Image, *, prepadding: int, scale: int, align: int) -> np.ndarray:
    """The official pipeline on the real runtime: replicate-pad, pad right/bottom to the
    alignment, run Input1 -> Eltwise4, crop to scale x the image, clamp."""
    x = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    height, width = x.shape[1:]
    extra_h, extra_w = (-height) % align, (-width) % align
    padded = np.pad(
        x, ((0, 0), (prepadding, prepadding + extra_h), (prepadding, prepadding + extra_w)), mode="edge"
    )
    net = ncnn.Net()
    net.load_param(str(param))
    net.load_model(str(weights))
    array = np.ascontiguousarray(padded)  # ncnn.Mat borrows this memory: keep the reference
    mat = ncnn.Mat(array)
    extractor = net.create_extractor()
    extractor.input("Input1", mat)
    ret, out = extractor.extract("Eltwise4")
    assert ret == 0
    result = np.array(out)[:, : height * scale, : width * scale].copy()
    del mat, array
    return np.clip(result, 0, 1)


@pytest.mark.parametrize(
    "model, noise, scale, prepadding, alignment",
    [
        ("upconv_7_photo", -1, 2, 7, 1),
        ("upconv_7_art", 3, 2, 7, 1),
        ("cunet", -1, 2, 18, 2),
        ("cunet", 0, 1, 28, 4),
    ],
)
def test_scale_context_and_alignment_are_those_of_the_official_tiler(
    models_dir: Path, model: str, noise: int, scale: int, prepadding: int, alignment: int
) -> None:
    upscaler = _upscaler(models_dir, model, noise, scale)
    assert (upscaler.scale, upscaler.prepadding, upscaler.alignment) == (scale, prepadding, alignment)


@pytest.mark.parametrize(
    "model, noise, scale",
    [
        ("upconv_7_photo", -1, 2),
        ("upconv_7_photo", 2, 2),
        ("upconv_7_art", -1, 2),
        ("upconv_7_art", 2, 2),
        ("cunet", -1, 2),
        ("cunet", 2, 2),
        ("cunet", 2, 1),
    ],
)
def test_agrees_with_the_ncnn_runtime_within_one_level(
    models_dir: Path, butterfly: Image.Image, model: str, noise: int, scale: int
) -> None:
    upscaler = _upscaler(models_dir, model, noise, scale)
    ours = upscaler.upscale(to_tensor(butterfly))[0].numpy()
    files = waifu2x_files(model, noise=noise, scale=scale, models_dir=models_dir)
    param, weights = files.param, files.bin
    theirs = _ncnn_upscale(
        param, weights, butterfly, prepadding=upscaler.prepadding, scale=scale, align=upscaler.alignment
    )
    assert ours.shape == theirs.shape == (3, 61 * scale, 75 * scale)
    assert np.abs(ours - theirs).max() <= 1 / 255
    # Not just "close": the difference is float rounding (about 1e-5 here).
    assert np.abs(ours - theirs).mean() < 1e-5


def test_a_noise_model_removes_noise_the_plain_model_keeps(models_dir: Path) -> None:
    rng = np.random.default_rng(3)
    grey = np.clip(0.5 + rng.normal(0, 0.04, (40, 40, 3)), 0, 1)
    noisy = torch.from_numpy(grey).permute(2, 0, 1).unsqueeze(0).float()
    plain = _upscaler(models_dir, "upconv_7_photo", -1).upscale(noisy)
    denoised = _upscaler(models_dir, "upconv_7_photo", 3).upscale(noisy)
    assert denoised.std() < 0.5 * plain.std()


@pytest.mark.parametrize("model, noise, scale", [("upconv_7_art", -1, 2), ("cunet", 1, 2), ("cunet", 1, 1)])
@pytest.mark.parametrize("size", [(1, 1), (9, 17), (20, 33)])
def test_the_output_is_exactly_scale_times_the_input_for_any_size(
    models_dir: Path, model: str, noise: int, scale: int, size: tuple[int, int]
) -> None:
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(size[1]))
    out = _upscaler(models_dir, model, noise, scale).upscale(x)
    assert out.shape == (1, 3, size[0] * scale, size[1] * scale)
    assert 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("model, noise, scale", [("upconv_7_photo", -1, 2), ("cunet", 0, 2), ("cunet", 3, 1)])
def test_tiled_output_equals_the_whole_image_output(
    models_dir: Path, butterfly: Image.Image, model: str, noise: int, scale: int
) -> None:
    upscaler = _upscaler(models_dir, model, noise, scale)
    x = to_tensor(butterfly.crop((0, 0, 64, 56)))
    whole = upscaler.upscale(x, tile=1024)
    tiled = upscaler.upscale(x, tile=32)
    assert len(upscaler.tiles(56, 64, tile=32)) == 4
    assert (whole - tiled).abs().max() < 2e-5


def test_per_tile_se_statistics_would_show_tile_colours(models_dir: Path, butterfly: Image.Image) -> None:
    # Why cunet's default gathers the squeeze-and-excitation averages over the whole image:
    # waifu2x-ncnn-vulkan's per-tile averages change the result by several levels per tile.
    upscaler = _upscaler(models_dir, "cunet", 0, 2)
    x = to_tensor(butterfly.crop((0, 0, 48, 40)))
    whole = upscaler.upscale(x, tile=1024)
    per_tile = upscaler.upscale(x, tile=24, se_scope="tile")
    assert (whole - per_tile).abs().max() > 2 / 255


def test_progress_counts_every_tile_of_every_pass(models_dir: Path) -> None:
    upscaler = _upscaler(models_dir, "cunet", 0, 2)
    seen = []
    upscaler.upscale(torch.rand(1, 3, 40, 40), tile=24, progress=seen.append)
    passes = 1 + len(upscaler.net.pooling_layers)  # one per SE block, then the picture
    assert passes == 5
    assert [p.step for p in seen] == list(range(1, 4 * passes + 1))
    assert all(p.total == 4 * passes for p in seen)
    assert [p.stage for p in seen[::4]] == ["context 1/4", "context 2/4", "context 3/4", "context 4/4", "upscale"]


def test_the_pil_path_gives_the_same_pixels_as_the_tensor_path(models_dir: Path, butterfly: Image.Image) -> None:
    upscaler = _upscaler(models_dir, "upconv_7_photo")
    via_pil = upscaler.upscale_image(butterfly.convert("RGBA"), tile=40)
    via_tensor = to_pil(upscaler.upscale(to_tensor(butterfly), tile=40))
    assert via_pil.size == (150, 122) and via_pil.mode == "RGB"
    assert np.array_equal(np.asarray(via_pil), np.asarray(via_tensor))


def test_missing_weights_name_the_command_that_installs_them(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="atelier models download waifu2x-cunet"):
        waifu2x_files("cunet", noise=2, models_dir=tmp_path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "esrgan"}, "unknown waifu2x model"),
        ({"model": "cunet", "noise": 4}, "noise level"),
        ({"model": "upconv_7_photo", "noise": 1, "scale": 1}, "only cunet"),
        ({"model": "cunet", "noise": -1, "scale": 1}, "only denoises"),
        ({"model": "cunet", "scale": 4}, "scales by 1 or 2"),
    ],
)
def test_impossible_choices_are_refused(models_dir: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        waifu2x_files(models_dir=models_dir, **kwargs)


def test_a_non_rgb_tensor_is_refused(models_dir: Path) -> None:
    with pytest.raises(ImageError, match="RGB"):
        _upscaler(models_dir, "upconv_7_photo").upscale(torch.rand(1, 4, 8, 8))


def test_every_model_choice_has_its_files(models_dir: Path) -> None:
    for model in MODELS:
        for noise in (-1, 0, 1, 2, 3):
            files = waifu2x_files(model, noise=noise, models_dir=models_dir)
            param, weights = files.param, files.bin
            assert param.stat().st_size > 0 and weights.stat().st_size > 0


_BIG_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    from PIL import Image
    from atelier.runtime import tune_allocator
    tune_allocator()  # as the CLI and the server run it: freed memory stays in the process
    from atelier.art.engines.upscale import Upscaler
    from atelier.install.models import waifu2x_files
    started = time.perf_counter()
    upscaler = Upscaler.load(waifu2x_files("upconv_7_photo", noise=-1, models_dir=Path(sys.argv[1])))
    with Image.open(sys.argv[2]) as image:
        image = image.convert("RGB")
    loaded = time.perf_counter()
    out = upscaler.upscale_image(image)
    done = time.perf_counter()
    print(json.dumps({"size": list(out.size), "input": list(image.size), "load_s": loaded - started,
                      "upscale_s": done - loaded, "corner": list(out.getpixel((out.width - 1, out.height - 1))),
                      "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    """
)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_3415x2160_photo_is_upscaled_within_3_gb(models_dir: Path, content_dir: Path) -> None:
    photo = content_dir / "microast_harbor_3415x2160.jpg"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", _BIG_SCRIPT, str(models_dir), str(photo)],
        capture_output=True, text=True, env=env, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    # The child's own high-water mark (RUSAGE_CHILDREN would report the largest of every child
    # this test process ever waited for).
    peak_kib = figures["peak_kib"]
    assert figures["size"] == [6830, 4320]
    megapixels = 3415 * 2160 / 1e6
    print(
        f"\nwaifu2x upconv_7_photo 3415x2160 -> 6830x4320: {figures['upscale_s']:.1f} s "
        f"({megapixels / figures['upscale_s']:.3f} input MP/s), peak RSS {peak_kib / 1024:.0f} MiB"
    )
    assert peak_kib * 1024 < 3 * 1024**3
