"""The commission painter: recipe choice, Gatys passes, finishing, upscale and watermark, on the
real relu3_1 VGG and waifu2x weights from ../shared, at tiny sizes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atelier.art.errors import ModelMissingError
from atelier.art.blocks.finish import FinishSpec, Watermark
from atelier.art.engines.gatys import RECIPES
from atelier.art.progress import Progress
from atelier.install.styles import Style, StyleError, add_style, load_style
from atelier.service.painting import (
    DEFAULT_FINISH,
    PaintingError,
    choose_recipe,
    finish_spec,
    hd_denoise,
    installed_vgg,
    load_encoder,
    render_commission,
    render_painting,
    upscale_picture,
    watermark_spec,
)

SHALLOW_LAYERS = ("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1")


@pytest.fixture
def style(style_dir: Path, tmp_path: Path) -> Style:
    """A catalog style made from ../shared's Starry Night, painting small and fast."""
    made = add_style(style_dir / "starry_night.jpg", name="starry", styles_dir=tmp_path / "styles")
    toml = made.folder / "style.toml"
    toml.write_text(toml.read_text().replace('base = "auto"', 'base = "auto"\npasses = "48x6,64x4"'))
    return load_style(made.folder)


@pytest.fixture
def photo(content_dir: Path) -> Image.Image:
    with Image.open(content_dir / "chicago.jpg") as image:
        return image.convert("RGB")


def differs(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> float:
    """Mean absolute difference (0..255) of two pictures inside ``box``."""
    return float(np.abs(np.asarray(a.crop(box), dtype=np.float32) - np.asarray(b.crop(box), dtype=np.float32)).mean())


# ----------------------------------------------------------------------------- weights and choices


def test_the_best_installed_vgg_is_used(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="atelier models download adain"):
        installed_vgg(tmp_path)
    (tmp_path / "vgg").mkdir()
    shutil.copy(models_dir / "vgg" / "vgg_normalised_conv2_1.pth", tmp_path / "vgg")
    assert installed_vgg(tmp_path)[0] == "ust-conv2_1"
    shutil.copy(models_dir / "vgg" / "vgg_normalised_conv3_1.pth", tmp_path / "vgg")
    assert installed_vgg(tmp_path)[0] == "ust-conv3_1"
    encoder, name = load_encoder(tmp_path)
    assert name == "ust-conv3_1" and encoder.last_layer == "relu3_1"
    assert load_encoder(tmp_path)[0] is encoder  # loaded once per process


def test_the_recipe_comes_from_the_option_then_the_style_then_auto(style: Style) -> None:
    assert choose_recipe(SHALLOW_LAYERS).name == "shallow"
    from_style = choose_recipe(SHALLOW_LAYERS, style=style)
    assert [(p.size, p.iterations) for p in from_style.passes] == [(48, 6), (64, 4)]
    named = choose_recipe(SHALLOW_LAYERS, style=style, recipe="sketch")
    assert named.name == "sketch"
    shaped = choose_recipe(SHALLOW_LAYERS, recipe="sketch", passes="100x3,200x2", size=100)
    assert [(p.size, p.iterations) for p in shaped.passes] == [(50, 3), (100, 2)]
    with pytest.raises(ModelMissingError, match="atelier models download adain"):
        choose_recipe(SHALLOW_LAYERS, recipe="classic")
    assert choose_recipe(SHALLOW_LAYERS, recipe=RECIPES["sketch"]) == RECIPES["sketch"]


def test_finishing_and_watermark_choices(style: Style, tmp_path: Path) -> None:
    assert finish_spec(style, True) == FinishSpec(auto_levels=True, clip_percent=0.3, saturation=1.05)
    assert finish_spec(style, True).watermark is None  # drawn separately, after any upscale
    assert finish_spec(None, True) == DEFAULT_FINISH
    assert finish_spec(style, False) == FinishSpec()
    assert watermark_spec(style, False) is None
    assert watermark_spec(style, True) == style.finish.watermark
    text = watermark_spec(style, "My shop")
    assert text is not None and text.text == "My shop" and text.position == style.finish.watermark.position
    logo = tmp_path / "logo.png"
    Image.new("RGBA", (40, 20), (255, 0, 0, 200)).save(logo)
    mark = watermark_spec(None, str(logo))
    assert mark is not None and mark.logo == logo and mark.text is None
    with pytest.raises(FileNotFoundError):
        watermark_spec(None, str(tmp_path / "missing.png"))


# ----------------------------------------------------------------------------- the pipeline


def test_a_painting_is_finished_and_watermarked_and_its_hd_version_is_not(
    style: Style, photo: Image.Image, models_dir: Path
) -> None:
    seen: list[Progress] = []
    rendered = render_painting(
        photo, models_dir=models_dir, style=style, finishing=True, watermark=True, upscale=2, progress=seen.append
    )
    assert rendered.painted.size == rendered.finished.size == (64, 43)  # chicago.jpg is 712x474
    assert rendered.image.size == (128, 86)
    assert rendered.recipe.summary().startswith("starry (shallow): 48x6, 64x4")
    assert [len(p.losses) for p in rendered.passes] == [6, 4]
    # Levels and saturation move every pixel a little (about one level on average here; an
    # unfinished picture differs by exactly 0), the watermark is checked on its own below.
    assert differs(rendered.painted, rendered.finished, (0, 0, 64, 43)) > 0.5
    stages = [p.stage for p in seen]
    assert stages[0] == "pass 1/2" and "pass 2/2" in stages and stages[-3:] == ["finish", "upscale", "done"]

    # The paid version: the same finished picture upscaled, without the mark.
    hd = upscale_picture(rendered.finished, factor=2, models_dir=models_dir)
    assert hd.size == rendered.image.size
    corner = (80, 60, 128, 86)  # where the bottom-right mark sits
    elsewhere = (0, 0, 64, 40)
    assert differs(rendered.image, hd, corner) > 3.0
    assert differs(rendered.image, hd, elsewhere) == 0.0


def test_a_commission_is_scaled_to_the_preview_size_and_repeatable(
    style: Style, photo: Image.Image, models_dir: Path
) -> None:
    one = render_commission(photo, style, max_size=32, models_dir=models_dir, device="cpu")
    two = render_commission(photo, style, max_size=32, models_dir=models_dir, device="cpu")
    assert one.size == (32, 21)
    assert np.array_equal(np.asarray(one), np.asarray(two))
    clean = render_commission(photo, style, max_size=32, watermark=False, models_dir=models_dir, device="cpu")
    assert differs(one, clean, (16, 12, 32, 21)) > 1.0 and differs(one, clean, (0, 0, 16, 8)) == 0.0


def test_paintings_can_be_given_instead_of_a_style(photo: Image.Image, style_dir: Path, models_dir: Path) -> None:
    with Image.open(style_dir / "udnie.jpg") as udnie, Image.open(style_dir / "mosaic.jpg") as mosaic:
        paintings = [udnie.convert("RGB"), mosaic.convert("RGB")]
    rendered = render_painting(
        photo, models_dir=models_dir, paintings=paintings, style_weights=[0.7, 0.3], passes="48x3",
        finishing=False, watermark="Atelier",
    )
    assert rendered.image.size == (48, 32)
    assert rendered.finished.tobytes() == rendered.painted.tobytes()  # no finishing asked
    assert rendered.vgg == "ust-conv3_1"


def test_a_style_without_its_painting_is_refused_before_painting(photo: Image.Image, style: Style, models_dir: Path) -> None:
    style.image_path.unlink()
    with pytest.raises(StyleError, match="atelier styles download starry"):
        render_painting(photo, models_dir=models_dir, style=style)
    with pytest.raises(PaintingError, match="upscale by 2 or 4"):
        render_painting(photo, models_dir=models_dir, style=style, paintings=[photo], upscale=3)


def test_a_logo_watermark_object_is_drawn(photo: Image.Image, models_dir: Path, style_dir: Path, tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    Image.new("RGBA", (40, 40), (255, 0, 0, 255)).save(logo)
    with Image.open(style_dir / "udnie.jpg") as udnie:
        painting = udnie.convert("RGB")
    rendered = render_painting(
        photo, models_dir=models_dir, paintings=[painting], passes="48x2", finishing=False,
        watermark=Watermark(logo=logo, position="top-left", opacity=1.0, scale=0.25, margin=0.0),
    )
    top_left = np.asarray(rendered.image.crop((0, 0, 12, 12)), dtype=np.int16)
    assert (top_left[..., 0] > 200).all() and (top_left[..., 1:] < 60).all()


# ----------------------------------------------------------------------------- the HD upscale's denoise


def test_the_hd_upscale_denoises_only_when_the_style_asks(style: Style, tmp_path: Path) -> None:
    assert style.finish.denoise == -1 and hd_denoise(style) == -1  # paintings: none by default
    assert hd_denoise(None) == DEFAULT_FINISH.denoise == -1
    assert hd_denoise("candy") == -1  # a filter's catalog entry has no style
    toml = style.folder / "style.toml"
    toml.write_text(toml.read_text().replace("[finish]", "[finish]\ndenoise = 1", 1))
    assert hd_denoise(load_style(style.folder)) == 1
    toml.write_text(toml.read_text().replace("denoise = 1", "denoise = 5"))
    with pytest.raises(StyleError, match="denoise must be -1"):
        load_style(style.folder)


def test_the_hd_upscale_keeps_the_brushwork_that_waifu2x_denoise_smooths_away(
    style_dir: Path, models_dir: Path
) -> None:
    # A painting (160x120 px of Starry Night's strokes at full size) doubled and shrunk back:
    # without denoise it comes back closer to itself; level 2 (the old default) blurs the
    # strokes (measured 28.2 dB against 23.4).
    with Image.open(style_dir / "starry_night.jpg") as image:
        painting = image.convert("RGB").crop((300, 200, 460, 320))

    def psnr_back(noise: int | None) -> float:
        kwargs = {} if noise is None else {"noise": noise}
        big = upscale_picture(painting, factor=2, models_dir=models_dir, **kwargs)
        back = np.asarray(big.resize(painting.size, Image.Resampling.LANCZOS), dtype=np.float64)
        error = np.mean((back - np.asarray(painting, dtype=np.float64)) ** 2)
        return float(10 * np.log10(255.0**2 / error))

    default, level2 = psnr_back(None), psnr_back(2)
    assert default == psnr_back(-1)
    assert default > level2 + 3.0, (default, level2)
