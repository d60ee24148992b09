"""Passes and recipes: the syntax, the checks, and which recipe the installed weights allow."""

from __future__ import annotations

import pytest

from atelier.art.errors import ModelMissingError
from atelier.art.engines.gatys import RECIPES, Pass, Recipe, RecipeError, paint, parse_passes, pick_recipe
from atelier.art.blocks.vgg import VGGEncoder


def shallow(passes: str, **changes: object) -> Recipe:
    recipe = RECIPES["shallow"].with_passes(passes)
    if changes:
        recipe = Recipe(recipe.name, tuple(Pass.from_dict(changes, defaults=p) for p in recipe.passes))
    return recipe


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
