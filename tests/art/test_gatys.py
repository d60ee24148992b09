"""Gatys optimisation transfer in passes, on the real relu3_1 VGG weights from ../shared.

Sizes stay tiny (48-128 px, a few iterations): what is checked is behaviour -- losses fall, a
pass continues the previous one, seeds repeat, the style is carried -- not beauty (the README
example is made with `atelier render --engine gatys` at full size).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from atelier.art.color import luminance
from atelier.art.errors import ModelMissingError
from atelier.art.gatys import (
    RECIPES,
    Pass,
    Recipe,
    RecipeError,
    _Features,
    _GramLoss,
    gram,
    nnpack_available,
    paint,
    parse_passes,
    pick_recipe,
)
from atelier.art.images import fit_longest, to_tensor
from atelier.art.progress import Progress
from atelier.art.vgg import VGGEncoder, load_vgg

SHALLOW = ("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1")


@pytest.fixture(scope="module")
def encoder(models_dir: Path) -> VGGEncoder:
    return load_vgg(models_dir / "vgg" / "vgg_normalised_conv3_1.pth")


def picture(folder: Path, name: str, size: int) -> torch.Tensor:
    with Image.open(folder / name) as image:
        return to_tensor(fit_longest(image.convert("RGB"), size))


@pytest.fixture(scope="module")
def photo(content_dir: Path) -> torch.Tensor:
    return picture(content_dir, "golden_gate.jpg", 256)


@pytest.fixture(scope="module")
def starry(style_dir: Path) -> torch.Tensor:
    return picture(style_dir, "starry_night.jpg", 256)


def shallow(passes: str, **changes: object) -> Recipe:
    recipe = RECIPES["shallow"].with_passes(passes)
    if changes:
        recipe = Recipe(recipe.name, tuple(Pass.from_dict(changes, defaults=p) for p in recipe.passes))
    return recipe


def style_distance(encoder: VGGEncoder, image: torch.Tensor, style: torch.Tensor) -> float:
    """Sum over the style layers of the relative Gram distance to the style image."""
    with torch.no_grad():
        mine = encoder(image, layers=SHALLOW)
        theirs = encoder(style, layers=SHALLOW)
    total = 0.0
    for name in SHALLOW:
        target = gram(theirs[name])
        total += float((gram(mine[name]) - target).norm() / target.norm())
    return total


# ----------------------------------------------------------------------------- the network


BACKENDS = ["onednn", "plain", *(["nnpack"] if nnpack_available() else [])]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_fast_features_equal_the_encoder_s(backend: str) -> None:
    encoder = VGGEncoder.random(up_to="relu5_1")
    x = torch.rand(1, 3, 45, 67, generator=torch.Generator().manual_seed(1))
    layers = ["relu1_1", "conv2_2", "relu3_1", "relu4_2", "relu5_1"]
    expected = encoder(x, layers=layers)
    got = _Features(encoder, up_to="relu5_1", backend=backend)(x, layers)  # type: ignore[arg-type]
    for name in layers:
        scale = expected[name].abs().max()
        assert torch.allclose(got[name], expected[name], atol=1e-5 * float(scale)), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_fast_features_have_the_encoder_s_gradient(backend: str) -> None:
    # The pads and pools recompute what they need in the backward pass, NNPACK's backward is a
    # full correlation with the flipped kernel: the same gradient as autograd's.
    encoder = VGGEncoder.random(up_to="relu4_2")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 37, 50, generator=g)
    layers = ["relu1_2", "relu2_1", "conv3_1", "relu4_2"]
    weights = {name: torch.rand(f.shape, generator=g) for name, f in encoder(x, layers=layers).items()}

    def gradient(run) -> torch.Tensor:  # type: ignore[no-untyped-def]
        image = x.clone().requires_grad_(True)
        features = run(image)
        sum((features[n] * weights[n]).sum() for n in layers).backward()
        return image.grad

    expected = gradient(lambda image: encoder(image, layers=layers))
    fast = _Features(encoder, up_to="relu4_2", backend=backend)  # type: ignore[arg-type]
    got = gradient(lambda image: fast(image, layers))
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.skipif(not nnpack_available(), reason="this PyTorch has no NNPACK")
@pytest.mark.parametrize(("threads", "nnpack_runs"), [(2, False), (1, True)])
def test_auto_uses_nnpack_only_on_one_thread(
    monkeypatch: pytest.MonkeyPatch, threads: int, nnpack_runs: bool
) -> None:
    # Measured per iteration (issue #9): NNPACK wins on one thread, oneDNN on two at every
    # size tried, so ``auto`` decides by the thread count at each call.
    calls: list[int] = []
    real = torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", lambda *a: calls.append(1) or real(*a))
    encoder = VGGEncoder.random(up_to="relu3_1")
    x = torch.rand(1, 3, 80, 72, generator=torch.Generator().manual_seed(4))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = _Features(encoder, up_to="relu3_1", backend="auto")(x, ["relu1_1", "relu3_1"])
    finally:
        torch.set_num_threads(before)
    assert bool(calls) == nnpack_runs
    expected = encoder(x, layers=["relu1_1", "relu3_1"])
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-5 * float(value.abs().max())), name


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_fused_gram_loss_has_the_gradient_of_the_plain_formula(channels_last: bool) -> None:
    g = torch.Generator().manual_seed(2)
    features = torch.rand(1, 6, 5, 7, dtype=torch.double, generator=g)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    target = gram(torch.rand(1, 6, 4, 4, dtype=torch.double, generator=g))
    features.requires_grad_(True)
    fused = _GramLoss.apply(features, target, 3.0)
    (fused_grad,) = torch.autograd.grad(fused, features)
    plain = ((gram(features) - target) ** 2).mean() * 3.0
    (plain_grad,) = torch.autograd.grad(plain, features)
    assert torch.allclose(fused, plain)
    assert torch.allclose(fused_grad, plain_grad)
    assert fused_grad.stride() == features.stride()  # no layout change on the way back
    assert torch.autograd.gradcheck(lambda f: _GramLoss.apply(f, target, 3.0), (features,))


# ----------------------------------------------------------------------------- recipes


def test_passes_parse_as_size_x_iterations() -> None:
    assert parse_passes("350x400, 960X200") == [(350, 400), (960, 200)]
    recipe = RECIPES["classic"].with_passes("128x10,256x5,512x2")
    assert [(p.size, p.iterations) for p in recipe.passes] == [(128, 10), (256, 5), (512, 2)]
    assert recipe.passes[2].style_layers == RECIPES["classic"].passes[-1].style_layers


@pytest.mark.parametrize("text", ["", "350", "350x", "x400", "350x400;960x200", "8x10", "350x0", "350 400"])
def test_bad_pass_syntax_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(RecipeError, match=r"350x400|SIZExITERATIONS|size must|iterations"):
        parse_passes(text)


def test_a_pass_with_an_unknown_layer_or_weight_count_is_refused() -> None:
    with pytest.raises(RecipeError, match="unknown VGG layer"):
        Pass(size=64, iterations=1, style_layers=("relu9_1",))
    with pytest.raises(RecipeError, match="2 style layer weights for 5"):
        Pass(size=64, iterations=1, style_layer_weights=(1.0, 2.0))


def test_auto_picks_classic_with_the_full_vgg_and_shallow_without() -> None:
    full = VGGEncoder.random(up_to="relu5_1").available_layers
    assert pick_recipe(full).name == "classic"
    assert pick_recipe(full).deepest_layer == "relu5_1"
    assert pick_recipe(("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1")).name == "shallow"


def test_a_recipe_needing_relu4_1_is_refused_on_the_relu3_1_weights(encoder: VGGEncoder, photo, starry) -> None:
    with pytest.raises(ModelMissingError, match=r"relu5_1.*end at relu3_1.*atelier models download adain"):
        pick_recipe(encoder.available_layers, "classic")
    deeper = shallow("64x1", style_layers=("relu1_1", "relu4_1"))
    with pytest.raises(ModelMissingError, match=r"relu4_1.*atelier models download adain"):
        paint(encoder, photo, [starry], recipe=deeper)


# ----------------------------------------------------------------------------- painting


def test_the_loss_goes_down_over_a_pass(encoder: VGGEncoder, photo, starry) -> None:
    result = paint(encoder, photo, [starry], recipe=shallow("64x15"))
    losses = result.passes[0].losses
    assert len(losses) == 15
    assert losses[-1] < 0.3 * losses[0]
    assert min(losses[5:]) < min(losses[:5])


def test_adam_lowers_the_loss_too(encoder: VGGEncoder, photo, starry) -> None:
    result = paint(encoder, photo, [starry], recipe=shallow("64x15", optimizer="adam"))
    losses = result.passes[0].losses
    assert losses[-1] < 0.7 * losses[0]
    assert 0.0 <= float(result.image.min()) and float(result.image.max()) <= 1.0


def test_the_second_pass_starts_where_the_first_ended(encoder: VGGEncoder, photo, starry) -> None:
    two = paint(encoder, photo, [starry], recipe=shallow("64x15,96x5"))
    cold = paint(encoder, photo, [starry], recipe=shallow("96x5"))
    first, second = two.passes
    assert (second.width, second.height) == (96, 96)
    # Resizing the first pass's result loses a little, but it starts far below a cold start.
    assert second.losses[0] < 0.5 * cold.passes[0].losses[0]
    assert second.losses[-1] < cold.passes[0].losses[-1]
    assert tuple(two.image.shape) == (1, 3, 96, 96)


def test_a_seeded_run_is_repeatable(encoder: VGGEncoder, photo, starry) -> None:
    recipe = shallow("48x4")
    a = paint(encoder, photo, [starry], recipe=recipe, init="noise", seed=7)
    b = paint(encoder, photo, [starry], recipe=recipe, init="noise", seed=7)
    c = paint(encoder, photo, [starry], recipe=recipe, init="noise", seed=8)
    assert torch.equal(a.image, b.image)
    assert a.losses == b.losses
    assert not torch.equal(a.image, c.image)


def test_a_two_pass_render_carries_the_style(encoder: VGGEncoder, photo, starry) -> None:
    result = paint(encoder, photo, [starry], recipe=shallow("64x30,128x10"))
    out = result.image
    assert tuple(out.shape) == (1, 3, 128, 128)
    small_photo = torch.nn.functional.interpolate(photo, size=(128, 128), mode="area")
    small_style = torch.nn.functional.interpolate(starry, size=(80, 128), mode="area")
    painted = style_distance(encoder, out, small_style)
    original = style_distance(encoder, small_photo, small_style)
    assert painted < 0.4 * original, (painted, original)
    # ... and still shows the photo: closer to it than to the painting at the content layer.
    with torch.no_grad():
        f_out = encoder.encode(out, "relu3_1")
        f_photo = encoder.encode(small_photo, "relu3_1")
    assert float((f_out - f_photo).norm() / f_photo.norm()) < 1.0


def test_a_blend_weight_of_zero_ignores_that_painting(encoder: VGGEncoder, photo, starry, style_dir: Path) -> None:
    other = picture(style_dir, "mondrian.jpg", 128)
    recipe = shallow("48x4")
    alone = paint(encoder, photo, [starry], recipe=recipe)
    blended = paint(encoder, photo, [starry, other], style_weights=[1.0, 0.0], recipe=recipe)
    mixed = paint(encoder, photo, [starry, other], style_weights=[0.5, 0.5], recipe=recipe)
    assert torch.allclose(alone.image, blended.image, atol=1e-5)
    assert not torch.allclose(alone.image, mixed.image, atol=1e-3)


def test_original_colors_keep_the_photo_s_colours(encoder: VGGEncoder, photo, starry) -> None:
    result = paint(encoder, photo, [starry], recipe=shallow("64x10"), original_colors=True)
    out = result.image
    small = torch.nn.functional.interpolate(photo, size=out.shape[-2:], mode="bicubic", antialias=True).clamp(0, 1)
    chroma_out = out - luminance(out)
    chroma_photo = small - luminance(small)
    unclipped = (out > 0.02) & (out < 0.98)
    assert float((chroma_out - chroma_photo)[unclipped].abs().mean()) < 0.01
    assert float((luminance(out) - luminance(small)).abs().mean()) > 0.02  # the texture changed


def test_progress_reports_pass_iteration_loss_and_previews(encoder: VGGEncoder, photo, starry) -> None:
    seen: list[Progress] = []
    paint(encoder, photo, [starry], recipe=shallow("48x4,64x3"), preview_every=2, progress=seen.append)
    assert [(p.stage, p.step, p.total) for p in seen] == [
        ("pass 1/2", 1, 4), ("pass 1/2", 2, 4), ("pass 1/2", 3, 4), ("pass 1/2", 4, 4),
        ("pass 2/2", 1, 3), ("pass 2/2", 2, 3), ("pass 2/2", 3, 3),
    ]  # fmt: skip
    assert all(p.loss is not None and p.loss > 0 for p in seen)
    previews = [(p.stage, p.step, p.preview.size) for p in seen if p.preview is not None]
    # Every 2 iterations, and at the end of each pass.
    assert previews == [
        ("pass 1/2", 2, (48, 48)), ("pass 1/2", 4, (48, 48)), ("pass 2/2", 2, (64, 64)), ("pass 2/2", 3, (64, 64)),
    ]  # fmt: skip
    assert seen[-1].extra is not None and seen[-1].extra["pass"] == 2 and "style" in seen[-1].extra


def test_the_full_vgg_architecture_runs_the_classic_layers() -> None:
    # Random weights in the official layout: speed and plumbing, not looks.
    encoder = VGGEncoder.random(up_to="relu5_1")
    g = torch.Generator().manual_seed(0)
    photo, style = torch.rand(1, 3, 40, 56, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    result = paint(encoder, photo, [style], recipe=RECIPES["classic"].with_passes("48x3"))
    assert tuple(result.image.shape) == (1, 3, 34, 48)
    assert result.passes[0].losses[-1] < result.passes[0].losses[0]


def test_the_engine_computes_the_textbook_losses() -> None:
    # The benchmark's baseline (neural-style-pt's loop) on the same layers and weights: the same
    # loss at every iteration, so `atelier bench gatys` compares equal work.
    from atelier.bench.gatys import textbook_pass

    encoder = VGGEncoder.random(up_to="relu5_1")
    g = torch.Generator().manual_seed(5)
    photo, style = torch.rand(1, 3, 48, 48, generator=g), torch.rand(1, 3, 48, 48, generator=g)
    spec = RECIPES["classic"].with_passes("48x4").passes[0]
    textbook: list[float] = []
    textbook_pass(encoder, photo, style, spec, on_iteration=textbook.append)
    ours = paint(encoder, photo, [style], recipe=Recipe("same", (spec,))).passes[0].losses
    assert ours[0] == pytest.approx(textbook[0], rel=1e-5)  # the same function...
    # ... and the same optimisation (L-BFGS magnifies the convolutions' rounding a little).
    assert ours == pytest.approx(textbook, rel=1e-2)
