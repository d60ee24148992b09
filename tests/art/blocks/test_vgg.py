"""The normalised VGG-19 encoder: official key layout, prefixes, taps, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from atelier.art.errors import ModelError, ModelMissingError
from atelier.art.blocks.vgg import (
    LAYER_NAMES,
    VGGEncoder,
    layer_channels,
    layer_downsampling,
    layer_index,
    load_vgg,
)

PREFIXES = {
    "vgg_normalised_conv1_1.pth": ("relu1_1", [0, 2]),
    "vgg_normalised_conv2_1.pth": ("relu2_1", [0, 2, 5, 9]),
    "vgg_normalised_conv3_1.pth": ("relu3_1", [0, 2, 5, 9, 12, 16]),
}
OFFICIAL_PARAM_INDICES = [0, 2, 5, 9, 12, 16, 19, 22, 25, 29, 32, 35, 38, 42, 45, 48, 51]


def reference_vgg() -> nn.Sequential:
    """The ``vgg`` Sequential of naoto0804/pytorch-AdaIN net.py, written out as published."""
    layers: list[nn.Module] = [nn.Conv2d(3, 3, (1, 1))]
    channels = 3
    for block, (convs, width) in enumerate([(2, 64), (2, 128), (4, 256), (4, 512), (4, 512)]):
        for _ in range(convs):
            layers += [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(channels, width, (3, 3)), nn.ReLU()]
            channels = width
        if block < 4:
            layers.append(nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True))
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def vgg_dir(models_dir: Path) -> Path:
    return models_dir / "vgg"


def test_the_reference_layout_has_53_modules_with_the_official_keys() -> None:
    ref = reference_vgg()
    assert len(ref) == 53
    encoder = VGGEncoder.random(seed=1)
    ours = encoder.state_dict()
    theirs = ref.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in theirs)
    assert sorted({int(k.split(".")[0]) for k in ours}) == OFFICIAL_PARAM_INDICES


def test_random_weights_load_strictly_into_the_reference_and_give_the_same_features() -> None:
    encoder = VGGEncoder.random(seed=2)
    ref = reference_vgg().eval()
    ref.load_state_dict(encoder.state_dict(), strict=True)
    x = torch.rand(1, 3, 37, 45)  # odd sizes exercise ceil_mode pooling
    # relu{N}_1 sit at Sequential indices 3, 10, 17, 30, 43 of the reference
    taps = {3: "relu1_1", 10: "relu2_1", 17: "relu3_1", 30: "relu4_1", 43: "relu5_1"}
    with torch.no_grad():
        ours = encoder(x, layers=list(taps.values()))
        y = x
        for index, module in enumerate(ref[:44]):
            y = module(y)
            if index in taps:
                assert ours[taps[index]].shape == y.shape
                # Channels-last convs add in another order: float32 rounding of features
                # that reach ~1000 at relu5_1, so the tolerance follows the layer's scale.
                scale = float(y.abs().max())
                torch.testing.assert_close(ours[taps[index]], y, rtol=1e-4, atol=max(1e-4, 1e-5 * scale))


def test_random_features_keep_a_sane_scale_down_to_relu5_4() -> None:
    encoder = VGGEncoder.random(seed=3)
    with torch.no_grad():
        feats = encoder(torch.rand(1, 3, 64, 64), layers=["relu1_1", "relu5_4"])
    for value in feats.values():
        assert torch.isfinite(value).all()
        assert 1.0 < value.std().item() < 1e4


@pytest.mark.parametrize("filename", sorted(PREFIXES))
def test_each_prefix_file_loads_and_ends_where_its_name_says(vgg_dir: Path, filename: str) -> None:
    last, indices = PREFIXES[filename]
    encoder = load_vgg(vgg_dir / filename)
    assert encoder.last_layer == last
    assert encoder.available_layers[-1] == last
    assert sorted({int(k.split(".")[0]) for k in encoder.state_dict()}) == indices
    state = torch.load(vgg_dir / filename, map_location="cpu", weights_only=True)
    for key, value in state.items():
        assert torch.equal(encoder.state_dict()[key], value)


def test_real_prefix_matches_the_reference_sequential_slice(vgg_dir: Path) -> None:
    state = torch.load(vgg_dir / "vgg_normalised_conv3_1.pth", map_location="cpu", weights_only=True)
    ref = reference_vgg()[:18].eval()
    ref.load_state_dict(state, strict=True)
    encoder = load_vgg(vgg_dir / "vgg_normalised_conv3_1.pth")
    x = torch.rand(2, 3, 50, 41)
    with torch.no_grad():
        feats = encoder(x, layers=["relu3_1", "relu1_1", "relu2_1"])
        assert list(feats) == ["relu3_1", "relu1_1", "relu2_1"]  # in the order asked
        for name, index in [("relu1_1", 3), ("relu2_1", 10), ("relu3_1", 17)]:
            torch.testing.assert_close(feats[name], ref[: index + 1](x), rtol=1e-4, atol=1e-3)


def test_layer_zero_maps_rgb_to_caffe_bgr_minus_the_mean(vgg_dir: Path) -> None:
    real = load_vgg(vgg_dir / "vgg_normalised_conv1_1.pth")
    rgb = torch.rand(1, 3, 4, 5)
    expected = rgb.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    for encoder in (real, VGGEncoder.random(seed=0)):
        with torch.no_grad():
            torch.testing.assert_close(encoder.get_submodule("0")(rgb), expected, rtol=0, atol=1e-3)


def test_asking_relu4_1_of_the_conv3_1_file_names_the_fix(vgg_dir: Path) -> None:
    encoder = load_vgg(vgg_dir / "vgg_normalised_conv3_1.pth")
    fix = r"relu4_1 needs the full vgg_normalised\.pth.*atelier models download adain"
    with pytest.raises(ModelError, match=fix):
        encoder(torch.rand(1, 3, 32, 32), layers=["relu2_1", "relu4_1"])
    with pytest.raises(ModelError, match="atelier models download adain"):
        load_vgg(vgg_dir / "vgg_normalised_conv3_1.pth", up_to="relu4_1")


def test_up_to_keeps_only_the_layers_needed() -> None:
    full = VGGEncoder.random(seed=4)
    short = VGGEncoder.from_state_dict(full.state_dict(), up_to="relu2_1")
    assert short.last_layer == "relu2_1"
    assert len(list(short.children())) == layer_index("relu2_1") + 1
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(short.encode(x, "relu2_1"), full.encode(x, "relu2_1"))


def test_forward_runs_only_as_far_as_the_deepest_layer_asked() -> None:
    encoder = VGGEncoder.random(seed=5)
    ran: list[int] = []
    for index, module in encoder.named_children():
        module.register_forward_hook(lambda m, i, o, index=int(index): ran.append(index))
    with torch.no_grad():
        encoder(torch.rand(1, 3, 32, 32), layers=["relu1_1", "relu2_1"])
    assert max(ran) <= layer_index("relu2_1")
    assert layer_index("conv2_1") in ran and layer_index("conv2_2") not in ran


def test_conv_taps_are_before_the_relu_and_not_clobbered_by_it() -> None:
    encoder = VGGEncoder.random(seed=6)
    with torch.no_grad():
        feats = encoder(torch.rand(1, 3, 16, 16), layers=["conv1_2", "relu1_2"])
    assert (feats["conv1_2"] < 0).any()
    torch.testing.assert_close(feats["relu1_2"], feats["conv1_2"].clamp_min(0))


def test_gradients_reach_the_image_but_not_the_frozen_weights() -> None:
    encoder = VGGEncoder.random(seed=7, up_to="relu3_1")
    image = torch.rand(1, 3, 24, 24, requires_grad=True)
    feats = encoder(image, layers=["relu1_1", "relu3_1"])
    (feats["relu1_1"].square().mean() + feats["relu3_1"].square().mean()).backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in encoder.parameters())


def test_channels_last_gives_the_same_features() -> None:
    encoder = VGGEncoder.random(seed=8, up_to="relu3_1")
    x = torch.rand(1, 3, 40, 28)
    with torch.no_grad():
        plain = encoder.encode(x, "relu3_1")
        encoder_cl = encoder.to(memory_format=torch.channels_last)
        fast = encoder_cl.encode(x.contiguous(memory_format=torch.channels_last), "relu3_1")
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-3)


def test_layer_tables() -> None:
    assert layer_index("relu4_1") == 30 and layer_index("relu5_4") == 52
    assert layer_channels("relu3_1") == 256 and layer_channels("conv5_4") == 512
    levels = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert [layer_downsampling(n) for n in levels] == [1, 2, 4, 8, 16]
    assert LAYER_NAMES[0] == "conv1_1" and LAYER_NAMES[-1] == "relu5_4"
    with pytest.raises(KeyError, match="unknown VGG layer"):
        layer_index("relu6_1")


def test_weights_that_do_not_fit_are_refused_clearly() -> None:
    state = VGGEncoder.random(seed=9, up_to="relu2_1").state_dict()
    wrong_shape = dict(state, **{"5.weight": torch.zeros(64, 32, 3, 3)})
    with pytest.raises(ModelError, match="do not fit"):
        VGGEncoder.from_state_dict(wrong_shape)
    with pytest.raises(ModelError, match="not a prefix"):
        VGGEncoder.from_state_dict({k: v for k, v in state.items() if not k.startswith("5.")})
    with pytest.raises(ModelError, match="unexpected key"):
        VGGEncoder.from_state_dict({"features.0.weight": torch.zeros(3, 3, 1, 1)})


def test_missing_and_damaged_files_are_typed_refusals(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="atelier models download adain"):
        load_vgg(tmp_path / "vgg_normalised.pth")
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="could not be read"):
        load_vgg(damaged)
