"""Choosing the device and the number format: the CPU path always, the CUDA path where a GPU is.

The CUDA tests are skipped on machines without one (CI has none); they check that every engine
runs on the GPU, that cuDNN autotuning is on, and that the half-precision autocast that
``precision="auto"`` picks paints within 40 dB PSNR of float32.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from atelier.art.blocks.devices import (
    AUTO_PRECISION,
    VIDEO_BATCH,
    Autocast,
    autocast,
    autocast_dtype,
    resolve_device,
    with_precision,
)
from atelier.art.errors import ArtError, DeviceError
from atelier.bench.engines import synthetic_image
from atelier.service.engines import EngineLoader

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine (CI has none): the CUDA path is not tested here")
without_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU, so 'cuda' is accepted")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.float().cpu() - b.float().cpu()).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


# ----------------------------------------------------------------------------- always


def test_cpu_is_the_cpu_and_auto_is_the_cpu_without_a_gpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_an_unknown_device_is_refused_with_the_choices() -> None:
    with pytest.raises(DeviceError, match="auto, cpu or cuda"):
        resolve_device("tpu")


@without_cuda
def test_cuda_without_a_gpu_is_a_device_error_that_says_what_to_do() -> None:
    with pytest.raises(DeviceError, match="no CUDA GPU") as caught:
        resolve_device("cuda")
    assert isinstance(caught.value, ArtError)  # the CLI turns these into one line and exit 2
    assert "--device cpu" in str(caught.value)


def test_the_cpu_always_paints_in_float32_whatever_the_precision_setting() -> None:
    for precision in ("auto", "fp32", "fp16", "bf16"):
        for engine in ("adain", "microast", "filter", ""):
            assert autocast_dtype("cpu", precision, engine=engine) is None


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(DeviceError, match="fp16"):
        autocast_dtype("cpu", "int3")


def test_autocast_on_the_cpu_changes_nothing() -> None:
    x = torch.rand(1, 3, 8, 8)
    conv = torch.nn.Conv2d(3, 3, 3)
    with autocast("cpu", "fp16", engine="adain"):
        assert conv(x).dtype == torch.float32


def test_the_loader_gives_the_engines_themselves_on_the_cpu(models_dir: Path) -> None:
    loader = EngineLoader(models_dir=models_dir, device=torch.device("cpu"), precision="fp16")
    assert not isinstance(loader.filter("candy"), Autocast)
    assert not isinstance(loader.style_engine("microast"), Autocast)
    assert with_precision(object, torch.device("cpu"), "bf16", name="adain") is object


def test_video_batches_are_bigger_on_a_gpu_than_on_the_cpu() -> None:
    (cpu_frames, cpu_pixels), (gpu_frames, gpu_pixels) = VIDEO_BATCH["cpu"], VIDEO_BATCH["cuda"]
    assert gpu_frames > cpu_frames and gpu_pixels > cpu_pixels
    assert cpu_pixels // (640 * 360) >= cpu_frames  # 640x360 runs in full batches on the CPU


def test_the_autocast_wrapper_is_the_engine_with_half_precision_painting(models_dir: Path) -> None:
    # The wrapper the loader puts around CUDA engines, exercised with CPU autocast (bfloat16):
    # everything but the painting methods is the engine's, and results come back as float32.
    from atelier.art.engines.protocol import StyleEngine

    engine = EngineLoader(models_dir=models_dir, device=torch.device("cpu")).style_engine("adain", weights="ust-conv3_1")
    wrapped = Autocast(engine, torch.bfloat16, device_type="cpu")
    assert isinstance(wrapped, StyleEngine)
    assert wrapped.wrapped is engine and wrapped.level == engine.level and wrapped.device == engine.device
    photo, style = synthetic_image(64, 80, seed=5), synthetic_image(64, 64, seed=6)
    with torch.inference_mode():
        features = wrapped.encode_content(photo)
        out = wrapped.decode(features, [wrapped.encode_style(style)])
        reference = engine.decode(engine.encode_content(photo), [engine.encode_style(style)])
    assert features.features.dtype == torch.bfloat16  # cached features take half the memory
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert 30.0 <= psnr(out, reference) < math.inf  # painted in bf16: close, not identical


# ----------------------------------------------------------------------------- with a GPU


@needs_cuda
def test_cuda_switches_on_cudnn_autotuning() -> None:
    torch.backends.cudnn.benchmark = False
    assert resolve_device("cuda").type == "cuda"
    assert torch.backends.cudnn.benchmark is True


@needs_cuda
def test_auto_precision_on_cuda_is_half_only_where_declared_safe() -> None:
    for engine, choice in AUTO_PRECISION.items():
        expected = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[choice]
        assert autocast_dtype("cuda", "auto", engine=engine) == expected
    assert autocast_dtype("cuda", "fp32", engine="adain") is None


def _paint(loader: EngineLoader, engine: str, photo: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    if engine == "filter":
        return loader.filter("candy").stylize(photo)
    model = loader.style_engine(engine, **({"weights": "ust-conv3_1"} if engine == "adain" else {}))
    with torch.inference_mode():
        return model.decode(model.encode_content(photo), [model.encode_style(style)])


@needs_cuda
@pytest.mark.parametrize("engine", ["filter", "microast", "adain"])
def test_each_engine_on_cuda_at_the_automatic_precision_paints_what_the_cpu_paints(models_dir: Path, engine: str) -> None:
    photo, style = synthetic_image(256, 320, seed=5), synthetic_image(256, 256, seed=6)
    reference = _paint(EngineLoader(models_dir=models_dir, device=torch.device("cpu")), engine, photo, style)
    loader = EngineLoader(models_dir=models_dir, device=resolve_device("cuda"), precision="auto")
    out = _paint(loader, engine, photo.cuda(), style.cuda())
    assert out.device.type == "cuda" and out.dtype == torch.float32
    # The guard on the automatic choice: no visible change against float32.
    quality = psnr(out, reference)
    assert quality >= 40.0, f"{engine} at {AUTO_PRECISION.get(engine)} on CUDA: {quality:.1f} dB"


@needs_cuda
@pytest.mark.parametrize("engine", ["microast", "adain"])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_forced_half_precision_still_paints_the_same_picture(models_dir: Path, engine: str, precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    photo, style = synthetic_image(256, 320, seed=5), synthetic_image(256, 256, seed=6)
    reference = _paint(EngineLoader(models_dir=models_dir, device=torch.device("cpu")), engine, photo, style)
    loader = EngineLoader(models_dir=models_dir, device=resolve_device("cuda"), precision=precision)
    assert isinstance(loader.style_engine(engine, **({"weights": "ust-conv3_1"} if engine == "adain" else {})), Autocast)
    quality = psnr(_paint(loader, engine, photo.cuda(), style.cuda()), reference)
    # bf16 keeps 8 bits of mantissa: on CPU autocast MicroAST came out at 40 dB, AdaIN 54 dB.
    assert quality >= 30.0, f"{engine} at {precision}: {quality:.1f} dB"


@needs_cuda
def test_waifu2x_and_gatys_run_on_cuda(models_dir: Path) -> None:
    from atelier.art.engines.gatys import Pass, Recipe, paint
    from atelier.art.engines.upscale import Upscaler
    from atelier.install.models import waifu2x_files
    from atelier.art.blocks.vgg import VGGEncoder

    device = resolve_device("cuda")
    image = synthetic_image(48, 64)
    files = waifu2x_files("upconv_7_photo", models_dir=models_dir)
    gpu = Upscaler.load(files, device=device).upscale(image)
    cpu = Upscaler.load(files, device="cpu").upscale(image)
    assert psnr(gpu, cpu) >= 40.0
    encoder = VGGEncoder.random(up_to="relu5_1").to(device)
    recipe = Recipe("tiny", (Pass(size=64, iterations=3),))
    out = paint(encoder, image.to(device), [synthetic_image(48, 64, seed=2).to(device)], recipe=recipe).image
    assert out.device.type == "cuda" and torch.isfinite(out).all()
