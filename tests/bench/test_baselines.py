"""The textbook baselines compute the same pictures as the engines they are timed against, from
the same weights, so ``atelier bench record``'s ratios compare equal work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.bench.baselines import TextbookAdaIN, TextbookFilter, TextbookMicroAST, TransformerNet
from atelier.bench.engines import _random_adain, synthetic_image
from atelier.service.engines import EngineLoader


@pytest.fixture(scope="module")
def loader(models_dir: Path) -> EngineLoader:
    return EngineLoader(models_dir=models_dir, device=torch.device("cpu"))


PHOTO = synthetic_image(64, 96, seed=3)
STYLE = synthetic_image(48, 64, seed=4)


def test_the_textbook_filter_paints_what_the_filter_paints(loader: EngineLoader) -> None:
    net = loader.filter("candy")
    assert torch.allclose(TextbookFilter(net)(PHOTO), net.stylize(PHOTO), atol=1e-4)


def test_the_textbook_filter_is_the_pytorch_examples_network_with_plain_instance_norm() -> None:
    modules = {type(m).__name__ for m in TransformerNet().modules()}
    assert {"InstanceNorm2d", "ReflectionPad2d"} <= modules


def test_the_textbook_microast_paints_what_microast_paints(loader: EngineLoader) -> None:
    engine = loader.style_engine("microast")
    with torch.inference_mode():
        ours = engine.decode(engine.encode_content(PHOTO), [engine.encode_style(STYLE)])
    assert torch.allclose(TextbookMicroAST(engine)(PHOTO, STYLE), ours, atol=1e-4)


@pytest.mark.parametrize("weights", ["ust-conv3_1", "random relu4_1"])
def test_the_textbook_adain_paints_what_adain_paints(loader: EngineLoader, weights: str) -> None:
    engine = _random_adain(torch.device("cpu")) if weights.startswith("random") else loader.style_engine("adain", weights=weights)
    with torch.inference_mode():
        ours = engine.decode(engine.encode_content(PHOTO), [engine.encode_style(STYLE)])
    theirs = TextbookAdaIN(engine)(PHOTO, STYLE)
    assert theirs.shape == ours.shape
    assert torch.allclose(theirs, ours, atol=1e-3)


def test_the_textbook_adain_encodes_the_style_on_every_call(loader: EngineLoader) -> None:
    engine = loader.style_engine("adain", weights="ust-conv3_1")
    textbook = TextbookAdaIN(engine)
    calls = []
    textbook.vgg.register_forward_hook(lambda *_: calls.append(1))
    textbook(PHOTO, STYLE)
    textbook(PHOTO, STYLE)
    assert len(calls) == 4  # photo and style, twice


def test_the_textbook_upconv_7_upscales_what_the_upscaler_upscales(models_dir: Path) -> None:
    from atelier.art.engines.upscale import Upscaler
    from atelier.bench.baselines import TextbookUpConv7
    from atelier.install.models import waifu2x_files

    image = synthetic_image(40, 56, seed=3)
    files = waifu2x_files("upconv_7_photo", noise=2, scale=2, models_dir=models_dir)
    ours = Upscaler.load(files).upscale(image)
    theirs = TextbookUpConv7(files.param, files.bin)(image)
    assert theirs.shape == ours.shape == (1, 3, 80, 112)
    assert torch.allclose(theirs, ours, atol=1e-4)
